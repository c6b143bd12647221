"""The dashboard's Sources and Sinks pages in a real browser against a real server: a
poll source created from the form against a real JSON API, its status and errors,
pause/resume/delete; a sink's counters and breaker, pause/resume/delete."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from browser import browser, page, screenshot, sign_in
from playwright.sync_api import Page, expect

from downstream import Answer, Downstream, events
from feed_server import Feed
from serverproc import READINGS, Server

__all__ = ["browser", "page"]  # fixtures, used by name

pytestmark = pytest.mark.slow

STREAM = {"name": "feed_rows", "fields": [{"name": "seq", "type": "int", "required": True,
                                           "min": 0}]}  # fmt: skip


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    yield f
    f.stop()


def test_sources_page_creates_a_poll_source_shows_errors_and_pauses_resumes_deletes(
    server: Server, page: Page, feed: Feed
) -> None:
    feed.add([{"seq": i} for i in range(120)] + [{"seq": -1}])
    with server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
    sign_in(page, server)
    page.get_by_role("link", name="Sources").click()
    expect(page.get_by_role("heading", name="Sources")).to_be_visible()
    page.get_by_label("source name").fill("api")
    page.get_by_label("source kind").select_option("poll")
    page.get_by_label("stream").select_option("feed_rows")
    config = page.get_by_label("source config (JSON)")
    expect(config).to_have_value(json.dumps(
        {"url": "https://api.example.com/events?limit=100", "interval": "30s", "items": "data",
         "next": "next"}, indent=2))  # fmt: skip
    config.fill("{not json")
    page.get_by_test_id("create-source").click()
    expect(page.get_by_test_id("source-answer").locator("code")).to_have_text("bad_json")
    config.fill(json.dumps({"url": f"{feed.url}/feed", "itmes": "data.items"}))
    page.get_by_test_id("create-source").click()
    refused = page.get_by_test_id("source-answer").locator(".alert")
    expect(refused.locator("code")).to_have_text("bad_source_config")  # the server's reason
    expect(refused).to_contain_text("unknown poll config keys ['itmes']")

    config.fill(json.dumps({"url": f"{feed.url}/feed?limit=25", "items": "data.items",
                            "next": "next", "interval": "200ms"}))  # fmt: skip
    page.get_by_test_id("create-source").click()
    row = page.locator("tr[data-source=api]")
    expect(row.get_by_test_id("source-status")).to_contain_text("running")
    expect(row).to_contain_text("120")  # rows in, live, without a reload
    expect(row.get_by_test_id("source-error")).to_contain_text("below_min")
    screenshot(page, "sources")

    page.get_by_label("source name").fill("broken")
    config.fill(json.dumps({"url": f"{feed.url}/missing", "interval": 1}))
    page.get_by_test_id("create-source").click()
    broken = page.locator("tr[data-source=broken]")
    expect(broken.get_by_test_id("source-status")).to_contain_text("backing_off")
    expect(broken.get_by_test_id("source-error")).to_contain_text("answered 404")

    row.get_by_role("button", name="Pause").click()
    expect(row.get_by_test_id("source-status")).to_contain_text("paused")
    with server.client() as c:
        assert c.get("/v1/sources/api").json()["status"] == "paused"
    row.get_by_role("button", name="Resume").click()
    expect(row.get_by_test_id("source-status")).to_contain_text("running")
    broken.get_by_role("button", name="Delete").click()
    broken.get_by_role("button", name="Really delete?").click()
    expect(broken).to_have_count(0)
    with server.client() as c:
        assert c.get("/v1/sources/broken").status_code == 404
        assert c.get("/v1/sources/api").json()["status"] == "running"


def test_sinks_page_shows_counters_and_breaker_and_pauses_resumes_deletes(
    server: Server, page: Page
) -> None:
    refuse = lambda i, d: Answer(422) if b"13.5" in d.seen[i].body else Answer()  # noqa: E731
    downstream = Downstream(refuse).start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json={**READINGS, "name": "sunk"}).status_code == 201
            made = c.post("/v1/sinks", json={
                "name": "partner", "kind": "http", "from": "sunk",
                "config": {"url": downstream.url, "batch_rows": 1, "max_concurrency": 2},
            })  # fmt: skip
            assert made.status_code == 201, made.text
            sent = c.post("/v1/streams/sunk/events", json=events(30, poison={3}))
            assert sent.json()["accepted"] == 30
        sign_in(page, server)
        page.get_by_role("link", name="Sinks").click()
        row = page.locator("tr[data-sink=partner]")
        expect(row.get_by_test_id("sink-status")).to_contain_text("running")
        expect(row.get_by_test_id("sink-breaker")).to_have_text("closed")
        cells = row.locator("td")
        expect(cells.nth(4)).to_have_text("30")  # produced
        expect(cells.nth(5)).to_have_text("29")  # delivered
        expect(cells.nth(6)).to_have_text("1")  # dead-lettered
        expect(cells.nth(7)).to_have_text("0")  # pending
        screenshot(page, "sinks")
        row.get_by_role("button", name="Pause").click()
        expect(row.get_by_test_id("sink-status")).to_contain_text("paused")
        row.get_by_role("button", name="Resume").click()
        expect(row.get_by_test_id("sink-status")).to_contain_text("running")
        row.get_by_role("button", name="Delete").click()
        row.get_by_role("button", name="Really delete?").click()
        expect(row).to_have_count(0)
        with server.client() as c:
            assert c.get("/v1/sinks/partner").status_code == 404
    finally:
        downstream.stop()
