"""Poll sources against a real JSON API on this machine: cursors, ETag, Retry-After, kill -9.

The stream has no ``id`` field, so a row read twice would be stored twice: "exactly
once" here is the cursor's doing, not deduplication's.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from feed_server import Feed
from serverproc import Server

STREAM = {"name": "events", "fields": [{"name": "seq", "type": "int", "required": True,
                                        "min": 0}]}  # fmt: skip


@pytest.fixture
def feed() -> Iterator[Feed]:
    f = Feed()
    yield f
    f.stop()


def wait_for(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def seqs(c: httpx.Client, stream: str = "events") -> list[int]:
    answer = c.post("/v1/query", json={"sql": f"SELECT seq FROM {stream} ORDER BY seq"})
    assert answer.status_code == 200, answer.text
    return [r[0] for r in answer.json()["rows"]]


def rows(n: int, start: int = 0) -> list[dict[str, int]]:
    return [{"seq": i} for i in range(start, start + n)]


def make(c: httpx.Client, name: str, stream: str, config: dict[str, Any]) -> None:
    spec = {"name": name, "kind": "poll", "stream": stream, "config": config}
    created = c.post("/v1/sources", json=spec)
    assert created.status_code == 201, created.text


def test_every_row_once_by_next_url_link_header_and_since_and_an_unchanged_answer_is_a_304(
    server: Server, feed: Feed
) -> None:
    feed.add(rows(230))
    with server.client() as c:
        for stream in ("events", "linked", "since"):
            assert c.post("/v1/streams", json={**STREAM, "name": stream}).status_code == 201
        make(c, "by_next", "events", {"url": f"{feed.url}/feed?limit=50", "interval": "200ms",
                                      "items": "data.items", "next": "next"})  # fmt: skip
        make(c, "by_link", "linked", {"url": f"{feed.url}/linked", "params": {"limit": 40},
                                      "interval": 0.2})  # fmt: skip
        make(c, "by_since", "since", {"url": f"{feed.url}/since?limit=60", "interval": 0.2,
                                      "items": "items", "since_field": "seq",
                                      "since_param": "since"})  # fmt: skip
        want = list(range(230))
        for stream in ("events", "linked", "since"):
            assert wait_for(lambda s=stream: seqs(c, s) == want), (stream, seqs(c, stream)[-5:])
        assert wait_for(lambda: any(h.status == 304 for h in feed.requests))
        feed.add(rows(75, 230))
        want = list(range(305))
        for stream in ("events", "linked", "since"):
            assert wait_for(lambda s=stream: seqs(c, s) == want), (stream, seqs(c, stream)[-5:])
        view = c.get("/v1/sources/by_next").json()
        assert (view["status"], view["rows_in"], view["rows_rejected"]) == ("running", 305, 0)
        assert '"url":"' in view["position"] and view["last_error"] is None, view
        assert c.get("/v1/sources/by_since").json()["position"] == '{"since":304}'


def test_retry_after_in_seconds_and_as_a_date_is_waited_out(server: Server, feed: Feed) -> None:
    feed.add(rows(10))
    feed.throttle(1, "2")
    with server.client() as c:
        assert c.post("/v1/streams", json={**STREAM, "name": "throttled"}).status_code == 201
        make(c, "slow", "throttled", {"url": f"{feed.url}/feed", "items": "data.items",
                                   "next": "next", "interval": 0.1})  # fmt: skip
        view = wait_for(lambda: (v := c.get("/v1/sources/slow").json())["status"] == "backing_off"
                        and v)  # fmt: skip
        assert "Retry-After" in view["reason"] and "429" in view["last_error"], view
        assert wait_for(lambda: seqs(c, "throttled") == list(range(10)))
        first, second = feed.requests[0], feed.requests[1]
        assert first.status == 429 and second.at - first.at >= 2.0
        date = email.utils.formatdate(time.time() + 3, usegmt=True)
        n = len(feed.requests)
        feed.throttle(1, date, status=503)
        feed.add(rows(5, 10))
        assert wait_for(lambda: seqs(c, "throttled") == list(range(15)))
        throttled = next(h for h in feed.requests[n:] if h.status == 503)
        after = [h for h in feed.requests[n:] if h.at > throttled.at]
        assert after and after[0].at - throttled.at >= 1.0  # the date is whole seconds
        assert c.get("/v1/sources/slow").json()["status"] == "running"


@pytest.mark.slow
def test_a_restart_resumes_at_the_committed_cursor_and_kill_9_loses_and_doubles_nothing(
    tmp_path: Path, feed: Feed
) -> None:
    feed.add(rows(120))
    srv = Server(tmp_path / "data").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            make(c, "feed", "events", {"url": f"{feed.url}/feed?limit=100", "interval": 0.2,
                                       "items": "data.items", "next": "next"})  # fmt: skip
            assert wait_for(lambda: seqs(c) == list(range(120)))
            position = c.get("/v1/sources/feed").json()["position"]
        srv.stop()
        n = len(feed.requests)
        total = 12_000
        feed.add(rows(total - 120, 120))
        srv.start()
        assert wait_for(lambda: len(feed.requests) > n)
        first = feed.requests[n]  # the last page again, its 20 rows skipped
        assert position.startswith('{"url":"http') and '"skip":20' in position, position
        assert "after=100&limit=100" in first.path and first.if_none_match == '"100-20"', first
        with srv.client() as c:  # killed while pages are being committed (the contract
            at_kill = wait_for(  # suite kills every kind in a loop)
                lambda: (v := c.get("/v1/sources/feed").json())["rows_in"] >= 2000 and v
            )
        srv.kill()
        assert at_kill["rows_in"] < total - 2000, at_kill
        srv.start()
        with srv.client() as c:
            got = wait_for(lambda: s if len(s := seqs(c)) >= total else None)
            assert got == list(range(total))
            count = c.post("/v1/query", json={"sql": "SELECT count(*) FROM events"}).json()
            assert count["rows"] == [[total]]
    finally:
        srv.stop()
