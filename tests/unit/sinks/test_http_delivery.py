"""``HttpDelivery`` against a real local HTTP server with scripted answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator

import pytest

from downstream import Answer, Downstream, retry_after_date
from headwater.sinks.config import http_config
from headwater.sinks.http import HttpDelivery
from headwater.sinks.policy import Breaker


@pytest.fixture
def down() -> Iterator[Downstream]:
    d = Downstream().start()
    yield d
    d.stop()


def delivery(d: Downstream, **config: object) -> HttpDelivery:
    cfg = http_config({"url": d.url, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **config})
    return HttpDelivery(cfg, Breaker(cfg.breaker_failures, cfg.breaker_open_s))


def scripted(*answers: Answer) -> object:
    return lambda i, d: answers[i] if i < len(answers) else Answer()


async def test_retry_after_seconds_and_date_are_honoured(down: Downstream) -> None:
    def script(i: int, _: Downstream) -> Answer:
        if i == 0:
            return Answer(429, {"retry-after": "1"})
        if i == 1:  # an HTTP-date has whole seconds: 3 s ahead is at least 2 s away
            return Answer(503, {"retry-after": retry_after_date(3)})
        return Answer()

    down.script = script
    d = delivery(down)
    t0 = time.monotonic()
    out = await d.send(b"{}", "k1")
    await d.close()
    assert out.ok and out.attempts == 3
    gaps = [b.at - a.at for a, b in zip(down.seen, down.seen[1:], strict=False)]
    assert gaps[0] >= 0.95 and gaps[1] >= 1.95
    assert time.monotonic() - t0 >= 2.9
    assert {s.key for s in down.seen} == {"k1"}
    assert d.stats.rate_limited == 1


async def test_retryable_answers_then_poison(down: Downstream) -> None:
    down.script = scripted(Answer(408), Answer(425), Answer(500), Answer(reset=True), Answer(200))  # type: ignore[assignment]
    d = delivery(down)
    assert (await d.send(b"{}", "k")).attempts == 5
    down.script = scripted(*[Answer()] * 5, Answer(400, body=b"bad field"))  # type: ignore[assignment]
    out = await d.send(b"{}", "p")
    assert not out.ok and out.attempts == 1 and out.status == 400 and out.body == "bad field"
    down.script = scripted(*[Answer()] * 6, Answer(409))  # type: ignore[assignment]
    assert not (await d.send(b"{}", "c")).ok
    await d.close()
    d = delivery(down, success_on_409=True)
    down.script = lambda i, dd: Answer(409)  # type: ignore[assignment]
    assert (await d.send(b"{}", "c")).ok
    await d.close()


async def test_retries_stop_at_max_attempts_and_the_breaker_opens(down: Downstream) -> None:
    down.script = lambda i, d: Answer(500)  # type: ignore[assignment]
    d = delivery(down, max_attempts=4, breaker_failures=3, breaker_open_s=0.2)
    out = await d.send(b"{}", "k")
    await d.close()
    assert not out.ok and out.attempts == 4 and out.status == 500
    assert out.first_failure_ms is not None and out.last_failure_ms is not None
    assert len(down.seen) == 4
    assert down.seen[3].at - down.seen[2].at >= 0.15  # the breaker held the 4th attempt


async def test_timeouts_retry_and_signatures_verify(down: Downstream) -> None:
    secret = base64.b64encode(b"topsecret").decode()
    down.script = scripted(Answer(200, delay_s=0.5))  # type: ignore[assignment]
    d = delivery(down, timeout_s=0.1, secret=f"whsec_{secret}")
    out = await d.send(b'{"a":1}', "msg_1")
    await d.close()
    assert out.ok and out.attempts == 2
    h = down.seen[-1].headers
    signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + b'{"a":1}'
    want = base64.b64encode(hmac.new(b"topsecret", signed, hashlib.sha256).digest()).decode()
    assert h["webhook-signature"] == f"v1,{want}" and h["webhook-id"] == "msg_1"


def test_the_http_client_finds_its_event_loop_without_an_import_per_request() -> None:
    """httpcore asks sniffio which loop runs, on every request and lock; when sniffio is
    missing each ask is a failed import that walks sys.path (it was half the CPU of an HTTP
    sink). The dependency is pinned; this fails if it goes."""
    import subprocess
    import sys

    code = (
        "import asyncio, sys, httpcore._synchronization as s\n"
        "async def main():\n"
        "    print(s.current_async_library(), 'sniffio' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["asyncio", "True"]
