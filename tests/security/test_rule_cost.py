"""Stream rules cost a bounded amount: functions that can blow up are refused when the
stream is created, and the allowed ones run off the event loop within a time budget."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import httpx
import orjson
import pytest

from serverproc import Server

STREAM = {
    "name": "words",
    "fields": [{"name": "s", "type": "string"}, {"name": "n", "type": "int"}],
}
# Allowed, but slow on long strings: RE2 leaves its DFA for its NFA on this pattern.
SLOW_RULE = "NOT regexp_matches(s, '[ab]*a[ab]{300}c')"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("rules") / "data", HEADWATER_RULE_TIMEOUT_S="1").start()
    yield srv
    srv.stop()


@pytest.mark.parametrize(
    ("expr", "function"),
    [
        ("length(repeat(s, 1000000000)) > 0", "repeat"),
        ("length(lpad(s, 1000000000, 'x')) > 0", "pad"),
        ("length(rpad(s, 1000000000, 'x')) > 0", "pad"),
        ("len(range(n)) > 0", "generate_series"),
        ("len(generate_series(1, n)) > 0", "generate_series"),
        ("len(list_value(s, s)) > 0", "array"),
        ("len(string_split(s, ',')) > 0", "split"),
        ("length(printf('%1000000000d', n)) > 0", "printf"),
        ("length(replace(s, 'a', s)) > 0", "replace"),
        ("levenshtein(s, 'abc') > 1", "levenshtein"),
    ],
)
def test_a_rule_that_can_blow_up_is_refused_at_creation(
    server: Server, expr: str, function: str
) -> None:
    with server.client() as c:
        r = c.post("/v1/streams", json={**STREAM, "rules": [{"expr": expr}]})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "rule_too_costly"
    assert function in error["message"].lower()


def test_a_rule_of_too_many_terms_is_refused(server: Server) -> None:
    expr = "length(" + " || ".join(["s"] * 300) + ") > 0"
    with server.client() as c:
        r = c.post("/v1/streams", json={**STREAM, "rules": [{"expr": expr}]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "rule_too_costly"


def test_cheap_functions_are_allowed(server: Server) -> None:
    rule = {"expr": "length(lower(s)) < 10 AND coalesce(n, 0) >= 0 AND starts_with(s, 'a')"}
    with server.client() as c:
        r = c.post("/v1/streams", json={**STREAM, "name": "cheap", "rules": [rule]})
        assert r.status_code == 201, r.text
        r = c.post("/v1/streams/cheap/events", json=[{"s": "abc", "n": 1}, {"s": "b", "n": 2}])
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (1, 1)


@pytest.fixture(scope="module")
def slow_stream(server: Server) -> str:
    with server.client() as c:
        made = c.post(
            "/v1/streams", json={**STREAM, "name": "slow", "rules": [{"expr": SLOW_RULE}]}
        )
        assert made.status_code == 201, made.text
    return "slow"


def slow_body(rows: int) -> bytes:
    rng = random.Random(7)
    return b"\n".join(
        orjson.dumps({"s": "".join(rng.choice("ab") for _ in range(200))}) for _ in range(rows)
    )


def test_health_answers_while_a_slow_rule_runs_and_the_rule_is_stopped_at_its_budget(
    server: Server, slow_stream: str
) -> None:
    body = slow_body(4000)  # under 1 MiB: small enough to decode inline
    answer: list[httpx.Response] = []
    window: list[float] = []

    def post() -> None:
        with server.client() as c:
            window.append(time.monotonic())
            answer.append(
                c.post(
                    "/v1/streams/slow/events",
                    content=body,
                    headers={"Content-Type": "application/x-ndjson"},
                )
            )
            window.append(time.monotonic())

    health: list[float] = []
    sender = threading.Thread(target=post)
    sender.start()
    with httpx.Client(base_url=server.url, timeout=30) as h:
        while sender.is_alive():
            assert h.get("/health").status_code == 200
            health.append(time.monotonic())
    sender.join()
    # /health kept answering all along: no gap in its answers near the request's length.
    during = [window[0], *(t for t in health if window[0] <= t <= window[1]), window[1]]
    longest_gap = max(b - a for a, b in pairwise(during))
    assert longest_gap < (window[1] - window[0]) / 2, (longest_gap, window[1] - window[0])
    r = answer[0]
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "rule_timeout"


def inflight_bytes(c: httpx.Client) -> float:
    found = re.search(r"^headwater_ingest_inflight_bytes (\S+)$", c.get("/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_queries_are_answered_while_ingest_is_busy_decoding(
    server: Server, slow_stream: str
) -> None:
    """Ingest decodes in its own threads: however many bodies wait, a query gets a thread."""
    body = slow_body(8000)  # over 1 MiB: decoded in a thread
    finished: list[float] = []

    def post() -> None:
        with server.client() as c:
            r = c.post(
                "/v1/streams/slow/events",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert r.status_code in (400, 503), r.text  # stopped at the rule's time budget
            finished.append(time.monotonic())

    senders = [threading.Thread(target=post) for _ in range(8)]
    started = time.monotonic()
    for t in senders:
        t.start()
    with server.client() as c:
        # Once every body is read and waits for (or is in) decoding, a query must not wait.
        deadline = started + 60
        while inflight_bytes(c) < 8 * len(body):
            assert time.monotonic() < deadline, "the bodies never all arrived"
        asked = time.monotonic()
        r = c.post("/v1/query", json={"sql": "SELECT 1 AS one"})
        answered = time.monotonic()
    for t in senders:
        t.join()
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[1]]
    assert len(finished) == 8
    assert answered - asked < (max(finished) - asked) / 2, (answered - asked, max(finished) - asked)
