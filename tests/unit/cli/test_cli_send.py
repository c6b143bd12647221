"""Sending batches against a scripted server (httpx.MockTransport): retries, keys, tallies."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
import orjson

from headwater.cli.batches import Batch, batches
from headwater.cli.send import SendOptions, post_batch, send_all
from headwater.cli.send_report import Tally

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> httpx.Client:
    return httpx.Client(base_url="http://hw", transport=httpx.MockTransport(handler))


def ok(accepted: int, **extra: object) -> httpx.Response:
    body = {"accepted": accepted, "rejected": 0, "duplicates": 0, "errors": [], **extra}
    return httpx.Response(200, json=body)


def batch(index: int = 0, rows: int = 2) -> Batch:
    body = b"\n".join(b'{"i":%d}' % i for i in range(rows))
    return Batch(index, body, rows, len(body), "application/x-ndjson", list(range(1, rows + 1)))


def test_429_and_503_are_retried_after_retry_after_with_the_same_key() -> None:
    seen: list[httpx.Request] = []
    script = [httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "rate_limited", "message": "slow"}}),
              httpx.Response(503, headers={"Retry-After": "0"}, json={"error": {"code": "overloaded", "message": "busy"}}),
              ok(2)]  # fmt: skip

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return script[len(seen) - 1]

    r = post_batch(client(handler), batch(), SendOptions("s"))
    assert r.failure is None and r.attempts == 3 and r.answer["accepted"] == 2
    keys = {req.headers["idempotency-key"] for req in seen}
    assert len(keys) == 1 and seen[0].url.path == "/v1/streams/s/events"


def test_connection_errors_are_retried_then_given_up() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("refused", request=req)

    r = post_batch(client(handler), batch(), SendOptions("s", max_retries=2))
    assert calls == 3 and r.failure is not None and r.fatal
    assert "headwater serve" in r.failure.message


def test_request_level_errors_are_not_retried() -> None:
    calls = 0

    def handler(req: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(
            404, json={"error": {"code": "unknown_stream", "message": "no stream"}}
        )

    r = post_batch(client(handler), batch(), SendOptions("s"))
    assert calls == 1 and r.failure is not None and r.failure.code == "unknown_stream" and r.fatal


def test_gzip_bodies_carry_the_encoding() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        assert req.headers["content-encoding"] == "gzip"
        return ok(2)

    assert post_batch(client(handler), batch(), SendOptions("s", gzip=True)).failure is None


def test_send_all_tallies_answers_and_maps_errors_to_file_records() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        rows = req.content.count(b"\n") + 1
        errors = [{"row": 1, "field": "i", "code": "wrong_type", "message": "bad"}]
        replayed = {"Idempotent-Replayed": "true"} if b'"i":0' in req.content else {}
        body = {"accepted": rows - 1, "rejected": 1, "duplicates": 0, "errors": errors}
        return httpx.Response(200, json=body, headers=replayed)

    data = b"\n".join(orjson.dumps({"i": i}) for i in range(5))
    tally = Tally(started_s=0.0)
    results: list[int] = []
    send_all(client(handler), batches(io.BytesIO(data), "ndjson", 2), SendOptions("s"), tally, 2,
             lambda r: results.append(r.batch.index))  # fmt: skip
    assert results == [0, 1, 2]
    assert (tally.accepted, tally.rejected, tally.batches, tally.rows_sent) == (2, 3, 3, 5)
    assert tally.replayed == 1
    assert [(e["batch"], e["record"], e["line"]) for e in tally.errors] == [
        (0, 2, 2),
        (1, 4, 4),
        (2, 6, None),
    ]


def test_send_all_stops_at_a_fatal_answer() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"code": "invalid_key", "message": "bad key"}})

    tally = Tally(started_s=0.0)
    many = (batch(i) for i in range(100))
    send_all(client(handler), many, SendOptions("s"), tally, 1, lambda r: None)
    assert tally.failed == 1 and tally.batches == 1
    assert "HEADWATER_KEY" in tally.failures[0]["message"]
