"""The dashboard in a real browser (Chromium) against a real ``headwater serve``.

Each test signs in, watches live elements change without a reload, and saves a
screenshot of the page to ``test-artifacts/``.
"""

from __future__ import annotations

import itertools
import re
import time

import httpx
import pytest
from browser import browser, page, screenshot, sign_in
from playwright.sync_api import Page, expect

from serverproc import READINGS, Server

__all__ = ["browser", "page"]  # fixtures, used by name

READINGS_FIELDS: list[dict[str, object]] = READINGS["fields"]  # type: ignore[assignment]

pytestmark = pytest.mark.slow

_seq = itertools.count()


def make_stream(c: httpx.Client) -> str:
    name = f"ui_{next(_seq)}"
    r = c.post("/v1/streams", json={**READINGS, "name": name})
    assert r.status_code == 201, r.text
    return name


def ev(i: int, **over: object) -> dict[str, object]:
    return {"device_id": f"d{i % 3}", "ts": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "temperature": 20.0 + i % 10, "status": "ok", "event_id": f"e{i}", **over}  # fmt: skip


def post(c: httpx.Client, stream: str, events: list[dict[str, object]]) -> dict[str, object]:
    r = c.post(f"/v1/streams/{stream}/events", json=events)
    assert r.status_code == 200, r.text
    out: dict[str, object] = r.json()
    return out


def mark_page(page: Page) -> None:
    """Tag the loaded document; ``assert_not_reloaded`` fails if it was replaced."""
    page.evaluate("window.__loaded_once = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate("window.__loaded_once === true"), "the page reloaded"


def test_sign_in_refuses_a_bad_key_and_signs_out(server: Server, page: Page) -> None:
    page.goto(server.url + "/")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#signin-message")).to_contain_text("unknown API key")
    screenshot(page, "signin")
    sign_in(page, server)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('headwater.key')") is None


def test_a_revoked_key_goes_back_to_sign_in_with_the_reason(server: Server, page: Page) -> None:
    with server.client() as c:
        created = c.post("/v1/keys", json={"role": "reader", "name": "ui-test"}).json()
        sign_in(page, server, key=created["key"])
        expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        assert c.delete(f"/v1/keys/{created['id']}").status_code == 200
    expect(page.locator("#signin-message")).to_contain_text("revoked")
    assert page.evaluate("sessionStorage.getItem('headwater.key')") is None


def test_overview_shows_streams_health_and_live_ingest(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(i) for i in range(5)])
        sign_in(page, server)
        row = page.get_by_test_id(f"stream-{name}")
        expect(row.locator(".total")).to_have_text("5")
        for component in ("process", "data_dir", "log", "store", "materializer"):
            expect(page.get_by_test_id(f"check-{component}").locator(".dot.ok")).to_be_visible()
        mark_page(page)
        for k in range(4):
            post(c, name, [ev(i) for i in range(5 + 25 * k, 30 + 25 * k)])
            time.sleep(0.4)
        expect(row.locator(".total")).to_have_text("105")
        expect(row.locator(".rate")).to_have_text(re.compile(r"^[1-9][\d.,]*/s$"))
        assert int(row.locator("svg.spark").get_attribute("data-points") or 0) >= 2
        assert_not_reloaded(page)
        screenshot(page, "overview")
        page.emulate_media(color_scheme="dark")
        screenshot(page, "overview-dark")


def test_stream_page_schema_live_tail_and_quarantine(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        out = post(c, name, [ev(0), ev(1), ev(2, temperature=999), ev(3, status="boom")])
        assert out["accepted"] == 2 and out["rejected"] == 2
        sign_in(page, server, hash_=f"#/streams/{name}")
        expect(page.get_by_test_id("schema")).to_contain_text("temperature")
        tail = page.get_by_test_id("tail").locator("tbody tr")
        expect(tail).to_have_count(2)
        quarantine = page.get_by_test_id("quarantine")
        expect(quarantine.locator("tbody tr")).to_have_count(2)
        expect(quarantine).to_contain_text("above_max")
        expect(quarantine).to_contain_text("temperature is 999.0, above the maximum 150")
        expect(quarantine).to_contain_text("not_in_enum")
        mark_page(page)

        post(c, name, [ev(4), ev(5, temperature=-99)])  # both follow without a reload
        expect(tail).to_have_count(3)
        expect(page.get_by_test_id("tail").locator("tr.new")).to_have_count(1)
        expect(quarantine.locator("tbody tr")).to_have_count(3, timeout=10_000)
        assert_not_reloaded(page)
        screenshot(page, "stream")


def test_quarantine_replay_per_row_and_per_code(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(0), ev(2, temperature=999), ev(3, status="boom")])
        sign_in(page, server, hash_=f"#/streams/{name}")
        quarantine = page.get_by_test_id("quarantine")
        expect(quarantine.locator("tbody tr")).to_have_count(2)
        tail = page.get_by_test_id("tail").locator("tbody tr")
        expect(tail).to_have_count(1)

        # Fix the schema, then replay the row it used to refuse.
        fields = [{**f, "max": 1000} if f["name"] == "temperature" else f for f in READINGS_FIELDS]
        r = c.put(f"/v1/streams/{name}", json={**READINGS, "name": name, "fields": fields})
        assert r.status_code == 200, r.text
        quarantine.locator("tr", has_text="above_max").get_by_role("button", name="Replay").click(
            timeout=3000
        )
        answer = page.get_by_test_id("replay-answer")
        expect(answer).to_contain_text("1 row(s), 1 accepted, 0 rejected again")
        expect(tail).to_have_count(2)

        # Replay every row of a code: still refused, and the answer says so.
        page.get_by_label("reason code").select_option("not_in_enum")
        page.get_by_test_id("replay-code").click()
        expect(answer).to_contain_text(
            "Replayed code not_in_enum: 1 row(s), 0 accepted, 1 rejected again"
        )
        screenshot(page, "stream-replayed")


def test_query_page_shows_table_chart_and_errors(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        post(c, name, [ev(i) for i in range(30)])
    sign_in(page, server, hash_="#/query")
    sql = page.get_by_test_id("sql")
    sql.fill(
        f"SELECT device_id, count(*) AS n, avg(temperature) AS avg_t FROM {name} GROUP BY 1 ORDER BY 1"
    )
    page.get_by_test_id("run").click()
    result = page.get_by_test_id("result")
    expect(result.locator("thead th")).to_have_text(["device_id", "n", "avg_t"])
    expect(result.locator("tbody tr")).to_have_count(3)
    expect(result.locator("tbody tr").first).to_contain_text("d0")
    expect(page.get_by_test_id("query-status")).to_contain_text("3 row(s)")
    expect(page.get_by_label("chart kind")).to_have_value("bar")  # counts by device
    expect(page.get_by_label("chart x")).to_have_value("device_id")
    expect(page.locator(".legend")).to_have_text("n")
    screenshot(page, "query")

    sql.fill("SELECT * FROM no_such_table")
    page.get_by_test_id("run").click()
    expect(result.locator(".alert code")).to_have_text("unknown_table")
    expect(result.locator(".alert")).to_contain_text("no_such_table")
    screenshot(page, "query-error")


def test_pipeline_page_chart_follows_the_result_table_live(server: Server, page: Page) -> None:
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_minute"
        sql = (f"CREATE PIPELINE {pipe} AS SELECT device_id, window_start, window_end, count(*) AS n, "
               f"avg(temperature) AS avg_t FROM TUMBLE({name}, ts, INTERVAL '1 minute') "
               f"GROUP BY device_id, window_start, window_end WITH (emit = 'changes')")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        post(c, name, [ev(i) for i in range(60)])
        sign_in(page, server, hash_=f"#/pipelines/{pipe}")
        expect(page.get_by_test_id("pipeline-sql")).to_contain_text("TUMBLE")
        expect(page.get_by_test_id("pipeline-status")).to_have_text("running")
        expect(page.get_by_test_id("live-mode")).to_have_text("live (server-sent events)")
        expect(page.get_by_test_id("x-column")).to_have_value("window_start")
        count = page.get_by_test_id("update-count")
        expect(count).not_to_have_attribute("data-updates", "0")
        mark_page(page)

        before = int(count.get_attribute("data-updates") or 0)
        draws = int(page.get_by_test_id("result-chart").get_attribute("data-draws") or 0)
        for k in range(1, 4):  # minutes 10:01 .. 10:03, new windows arrive over SSE
            post(c, name, [ev(i) for i in range(60 * k, 60 * k + 60)])
        page.wait_for_function(
            "n => Number(document.querySelector('[data-testid=update-count]').dataset.updates) >= n",
            arg=before + 9,
        )
        expect(page.get_by_test_id("live-mode")).to_have_text("live (server-sent events)")
        assert int(page.get_by_test_id("result-chart").get_attribute("data-draws") or 0) > draws
        expect(page.get_by_test_id("result-legend")).to_contain_text("d0")
        assert_not_reloaded(page)
        screenshot(page, "pipeline")

        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_test_id("pipeline-status")).to_have_text("paused")
        page.get_by_role("button", name="Resume").click()
        expect(page.get_by_test_id("pipeline-status")).to_have_text("running")


def test_pipeline_page_stays_responsive_under_a_stream_of_updates(
    server: Server, page: Page
) -> None:
    """About 10k row changes a minute arrive over SSE; frames keep coming, draws are batched."""
    with server.client() as c:
        name = make_stream(c)
        pipe = f"{name}_per_device"
        sql = f"CREATE PIPELINE {pipe} AS SELECT device_id, count(*) AS n FROM {name} GROUP BY device_id WITH (emit = 'changes')"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        sign_in(page, server, hash_=f"#/pipelines/{pipe}")
        expect(page.get_by_test_id("live-mode")).to_have_text("live (server-sent events)")
        page.evaluate("""() => {
            window.__gaps = [];
            let last = performance.now();
            const tick = (t) => { window.__gaps.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(tick); };
            requestAnimationFrame(tick);
        }""")
        # 60 batches of 50 events with 50 distinct devices over ~6 s: 3,000 changed rows.
        for k in range(60):
            events = [ev(0, device_id=f"dev{i}", event_id=f"x{k}_{i}") for i in range(50)]
            post(c, name, events)
            time.sleep(0.1)
        page.wait_for_function(
            "() => Number(document.querySelector('[data-testid=update-count]').dataset.updates) >= 2500"
        )
        gaps = page.evaluate("() => { window.__stop = true; return window.__gaps; }")
        updates = int(page.get_by_test_id("update-count").get_attribute("data-updates") or 0)
        draws = int(page.get_by_test_id("result-chart").get_attribute("data-draws") or 0)
        assert draws < updates / 10, (draws, updates)
        assert max(gaps) < 1000, f"a frame took {max(gaps):.0f} ms"
        screenshot(page, "pipeline-load")
