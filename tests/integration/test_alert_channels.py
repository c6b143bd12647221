"""Alert channels against local stand-ins of Slack, PagerDuty Events v2, a Standard Webhooks
receiver and an SMTP server: the requests they document, retries and dead letters."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from itertools import pairwise

import httpx
import pytest

from alert_services import Mailbox, pagerduty, signature_ok, slack, webhook_receiver
from headwater.alerts.channels import build_channel
from headwater.alerts.delivery import Notification, Pacer, RetryPolicy, deliver, parse_retry_after

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
POLICY = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05, rng=random.Random(7))


def note(kind: str = "firing") -> Notification:
    return Notification("default", "hot", "dev-1", kind, "critical", "dev-1 is at 45.5",
                        {"team": "ops"}, {"device": "dev-1", "temperature": 45.5},
                        1_767_225_601_000, 1_767_225_599_000)  # fmt: skip


class Sleeps:
    """The waits ``deliver`` asked for (it waits nothing: the stand-ins answer at once)."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


@pytest.fixture
async def client() -> Iterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c  # type: ignore[misc]


async def test_slack_retries_after_429_as_told(client: httpx.AsyncClient) -> None:
    svc = slack(throttle_first=2, retry_after="3")
    try:
        sleeps = Sleeps()
        ch = build_channel(client, {"kind": "slack", "url": svc.url + "/services/T/B/X"})
        out = await deliver(ch, note(), RetryPolicy(attempts=4, cap_s=10.0), sleeps)
        assert out.delivered and out.attempts == 3
        assert sleeps.asked == [3.0, 3.0]  # Retry-After, not the backoff
        body = svc.accepted[0].json()
        assert "dev-1 is at 45.5" in body["text"] and body["blocks"][0]["type"] == "section"
    finally:
        svc.close()


async def test_pagerduty_trigger_then_resolve_with_one_dedup_key(client: httpx.AsyncClient) -> None:
    svc = pagerduty(throttle_every=2)  # every other request is throttled first
    try:
        ch = build_channel(client, {"kind": "pagerduty", "routing_key": "R0UT1NG",
                                    "url": svc.url + "/v2/enqueue"})  # fmt: skip
        assert (await deliver(ch, note("firing"), POLICY, Sleeps())).delivered
        assert (await deliver(ch, note("resolved"), POLICY, Sleeps())).delivered
        events = [r.json() for r in svc.accepted]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert {e["dedup_key"] for e in events} == {"hot:dev-1"}
        assert events[0]["payload"]["severity"] == "critical"
        assert events[0]["payload"]["summary"] == "dev-1 is at 45.5"
        assert len(svc.seen) > len(svc.accepted)  # the 429s were retried
    finally:
        svc.close()


async def test_webhook_is_signed_and_a_failing_one_becomes_a_dead_letter(
    client: httpx.AsyncClient,
) -> None:
    ok, down, refusing = (webhook_receiver(SECRET, fail_first=1),
                          webhook_receiver(SECRET, fail_first=99),
                          webhook_receiver(SECRET, fail_first=99, status=400))  # fmt: skip
    try:
        out = await deliver(build_channel(client, {"kind": "webhook", "url": ok.url,
                                                   "secret": SECRET}), note(), POLICY)  # fmt: skip
        assert out.delivered and out.attempts == 2
        got = ok.accepted[0]
        assert signature_ok(SECRET, got.headers, got.body)
        assert not signature_ok("whsec_" + "A" * 32, got.headers, got.body)
        assert got.json()["type"] == "alert.firing" and got.json()["values"]["temperature"] == 45.5
        out = await deliver(build_channel(client, {"kind": "webhook", "url": down.url,
                                                   "secret": SECRET}), note(), POLICY)  # fmt: skip
        assert not out.delivered and out.attempts == 4 and "HTTP 503" in (out.error or "")
        out = await deliver(build_channel(client, {"kind": "webhook", "url": refusing.url,
                                                   "secret": SECRET}), note(), POLICY)  # fmt: skip
        assert not out.delivered and out.attempts == 1 and "HTTP 400" in (out.error or "")
    finally:
        for s in (ok, down, refusing):
            s.close()


async def test_unreachable_webhook_is_retried_then_dead(client: httpx.AsyncClient) -> None:
    from serverproc import free_port

    ch = build_channel(client, {"kind": "webhook", "url": f"http://127.0.0.1:{free_port()}",
                                "secret": SECRET})  # fmt: skip
    out = await deliver(ch, note(), POLICY, Sleeps())
    assert not out.delivered and out.attempts == 4 and "ConnectError" in (out.error or "")


async def test_email_over_smtp(client: httpx.AsyncClient) -> None:
    box = Mailbox()
    try:
        ch = build_channel(client, {"kind": "email", "host": "127.0.0.1", "port": box.port,
                                    "from": "alerts@example.com",
                                    "to": ["ops@example.com", "dev@example.com"]})  # fmt: skip
        assert (await deliver(ch, note(), POLICY)).delivered
        [msg] = box.messages
        assert msg["Subject"] == "[FIRING] dev-1 is at 45.5"
        assert msg["To"] == "ops@example.com, dev@example.com"
        assert "temperature: 45.5" in msg.get_payload()
    finally:
        box.close()


def test_retry_after_takes_seconds_and_http_dates() -> None:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon") is None
    p = RetryPolicy(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    assert all(0 <= p.delay(a, None) <= min(8.0, 2**a) for a in range(10))
    assert p.delay(3, 100.0) == 8.0


async def test_slack_sends_are_paced_per_webhook(client: httpx.AsyncClient) -> None:
    svc = slack()
    try:
        pacer = Pacer(0.2)
        a = build_channel(client, {"kind": "slack", "url": svc.url + "/a"}, pacer)
        b = build_channel(client, {"kind": "slack", "url": svc.url + "/b"}, pacer)
        outs = await asyncio.gather(*(deliver(ch, note(), POLICY) for ch in (a, a, a, b)))
        assert all(o.delivered for o in outs)
        times = sorted(r.at for r in svc.accepted if r.path == "/a")
        assert len(times) == 3 and all(y - x >= 0.15 for x, y in pairwise(times))
        first_b = next(r.at for r in svc.accepted if r.path == "/b")
        assert first_b < times[1]  # another webhook does not wait behind this one
    finally:
        svc.close()
