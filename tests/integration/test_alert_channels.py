"""Alert notifications through the sinks' delivery machinery, against local stand-ins of
Slack, PagerDuty Events v2, a Standard Webhooks receiver (steady, flaky, refusing, down)
and an SMTP server: the requests they document, Retry-After, pacing, dead letters in
``<rule>_dlq`` with replay, grouping, and an outbox that outlives a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from alert_services import (
    HttpStandIn,
    Mailbox,
    flaky_webhook,
    pagerduty,
    signature_ok,
    slack,
    webhook_receiver,
)
from headwater.alerts.delivery import RetryPolicy
from headwater.alerts.service import Alerts
from headwater.catalog.sqlite import Catalog
from headwater.model.time import ManualClock
from headwater.store.duckdb import DuckDBStore
from headwater.store.ports import ResultWrite
from serverproc import free_port

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
POLICY = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05, breaker_failures=1000)
T0 = 1_767_225_600_000
STREAM = pa.schema([("_offset", pa.int64()), ("device_id", pa.string()), ("site", pa.string()),
                    ("temperature", pa.float64())])  # fmt: skip
Parts = tuple[Catalog, DuckDBStore, ManualClock]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    store = DuckDBStore(tmp_path / "store.duckdb", memory_limit="256MB", threads=1)
    store.ensure_table("default", "readings", STREAM)
    yield catalog, store, ManualClock(T0)
    store.close()
    catalog.close()


class Feed:
    def __init__(self, store: DuckDBStore) -> None:
        self.store, self.offset = store, 0

    def __call__(self, *rows: tuple[str, float, str]) -> None:
        n = len(rows)
        t = pa.table({"_offset": list(range(self.offset, self.offset + n)),
                      "device_id": [r[0] for r in rows], "temperature": [r[1] for r in rows],
                      "site": [r[2] for r in rows]}, schema=STREAM)  # fmt: skip
        self.offset += n
        self.store.commit("default", ResultWrite("m", {}, appends={"readings": t}))


def rule(name: str, channels: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"name": name, "from": "readings", "key": "device_id", "severity": "critical",
            "condition": "temperature > 40", "summary": "$device_id is at $temperature",
            "labels": {"team": "ops"}, "channels": channels, **extra}  # fmt: skip


async def until(what: str, check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if out := check():
            return out
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def step(a: Alerts) -> None:
    """One evaluation, then every send it makes due, until the outbox is empty."""
    d = a.dispatcher
    d.add(await asyncio.to_thread(a.evaluate))
    d.dispatch()
    await until("the sends", lambda: not d._tasks)


def letters(store: DuckDBStore, name: str) -> list[dict[str, Any]]:
    t = store.sql(
        "default", f"SELECT * FROM {name}_dlq ORDER BY key", max_rows=10_000, timeout_s=10
    )
    return t.to_pylist()


async def test_slack_paced_and_retried_after_429_as_told(parts: Parts) -> None:
    catalog, store, clock = parts
    svc = slack(throttle_first=1, retry_after="1")
    a = Alerts(catalog, store, clock, POLICY)
    feed = Feed(store)
    try:
        a.create("default", rule("hot", [{"kind": "slack", "url": svc.url + "/T/B/X"}]),
                 {"readings"})  # fmt: skip
        feed(("d1", 45.5, "n"), ("d2", 41.0, "n"), ("d3", 50.0, "s"))
        await step(a)
        assert len(svc.accepted) == 3 and len(svc.seen) == 4
        times = [r.at for r in svc.seen]
        assert times[1] - times[0] >= 0.95  # the Retry-After of the 429
        assert all(y - x >= 0.9 for x, y in pairwise(r.at for r in svc.accepted))  # 1/s
        texts = sorted(r.json()["text"] for r in svc.accepted)
        assert "d1 is at 45.5" in texts[0] and texts[0].startswith(":red_circle: [FIRING]")
        assert catalog.alert_outbox() == []
        kinds = [e["kind"] for e in a.events("default", "hot", 100)]
        assert kinds.count("notified") == 3 and kinds.count("fired") == 3
    finally:
        await a.dispatcher.drain(1.0)
        svc.close()


async def test_pagerduty_trigger_then_resolve_with_one_dedup_key(parts: Parts) -> None:
    catalog, store, clock = parts
    svc = pagerduty(throttle_every=2)  # every other request is throttled first
    a = Alerts(catalog, store, clock, POLICY)
    feed = Feed(store)
    try:
        ch = {"kind": "pagerduty", "routing_key": "R0UT1NG", "url": svc.url + "/v2/enqueue"}
        a.create("default", rule("pd", [ch]), {"readings"})
        feed(("dev-1", 45.5, "n"))
        await step(a)
        feed(("dev-1", 20.0, "n"))
        await step(a)
        events = [r.json() for r in svc.accepted]
        assert [e["event_action"] for e in events] == ["trigger", "resolve"]
        assert {e["dedup_key"] for e in events} == {"pd:dev-1"}
        assert events[0]["payload"]["severity"] == "critical"
        assert events[0]["payload"]["summary"] == "dev-1 is at 45.5"
        assert len(svc.seen) > len(svc.accepted)  # the 429s were retried
    finally:
        await a.dispatcher.drain(1.0)
        svc.close()


async def test_flaky_webhook_delivers_everything_and_failures_become_dead_letters(
    parts: Parts,
) -> None:
    catalog, store, clock = parts
    flaky = flaky_webhook(SECRET, fail_rate=0.4, seed=3)
    refusing = webhook_receiver(SECRET, fail_first=99, status=400)
    down = f"http://127.0.0.1:{free_port()}"
    a = Alerts(catalog, store, clock, RetryPolicy(attempts=20, base_s=0.01, cap_s=0.05,
                                                  breaker_failures=1000))  # fmt: skip
    feed = Feed(store)
    try:
        a.create("default", rule("f", [{"kind": "webhook", "url": flaky.url, "secret": SECRET}]),
                 {"readings"})  # fmt: skip
        a.create("default", rule("r", [
            {"kind": "webhook", "url": refusing.url, "secret": SECRET},
            {"kind": "webhook", "url": down, "secret": SECRET},
        ]), {"readings"})  # fmt: skip
        devices = [f"d{i}" for i in range(8)]
        feed(*[(d, 50.0, "n") for d in devices])
        await step(a)
        feed(*[(d, 10.0, "n") for d in devices])
        await step(a)

        got = [r.json() for r in flaky.accepted]
        assert sorted((g["key"], g["status"]) for g in got) == sorted(
            [(d, "firing") for d in devices] + [(d, "resolved") for d in devices]
        )  # every notification once, none lost to the 40% failures
        for d in devices:  # per key, the resolve after its fire
            assert [g["status"] for g in got if g["key"] == d] == ["firing", "resolved"]
        assert len(flaky.seen) > len(flaky.accepted)
        assert all(signature_ok(SECRET, r.headers, r.body) for r in flaky.accepted)
        assert letters(store, "f") == []  # nothing dead

        dead = letters(store, "r")
        assert len(dead) == 2 * 2 * len(devices)  # fire + resolve, on both channels
        refused = [d for d in dead if d["last_status"] == 400]
        unreachable = [d for d in dead if d["last_status"] is None]
        assert len(refused) == len(unreachable) == 2 * len(devices)
        assert {d["attempts"] for d in refused} == {1}  # a 4xx is not retried
        assert {d["attempts"] for d in unreachable} == {20} and "ConnectError" in unreachable[0][
            "error"
        ]
        assert all(d["state"] == "dead" for d in dead)
        row = orjson.loads(refused[0]["row"])
        assert row["kind"] == "webhook" and row["n"]["rule"] == "r"
        history = a.events("default", "r", 1000)
        assert sum(e["kind"] == "failed" for e in history) == len(dead)
        assert catalog.alert_outbox() == []

        # the receiver is fixed: replay the refused ones, each once
        refusing.answer = lambda req, n: (204, {}, b"")
        keys = [d["key"] for d in refused]
        assert await a.replay("default", "r", keys) == len(keys)
        assert await a.replay("default", "r", keys) == 0  # marked: a second replay skips them
        await until("replayed", lambda: len(refusing.accepted) == len(keys))
        await until("recorded", lambda: all(
            d["state"] == "replayed" for d in letters(store, "r") if d["key"] in keys))  # fmt: skip
        assert await a.replay("default", "r", keys) == 0
        assert len(refusing.accepted) == len(keys)
        await until("the replays in the history", lambda: sum(
            e["kind"] == "replayed" for e in a.events("default", "r", 1000)) == len(keys))  # fmt: skip
    finally:
        await a.dispatcher.drain(1.0)
        flaky.close()
        refusing.close()


async def test_grouped_notifications_and_email(parts: Parts) -> None:
    catalog, store, clock = parts
    box = Mailbox()
    hook = webhook_receiver(SECRET)
    a = Alerts(catalog, store, clock, POLICY)
    feed = Feed(store)
    try:
        mail = {"kind": "email", "host": "127.0.0.1", "port": box.port,
                "from": "alerts@example.com", "to": ["ops@example.com", "dev@example.com"]}  # fmt: skip
        a.create("default", rule("g", [mail, {"kind": "webhook", "url": hook.url,
                                              "secret": SECRET}],
                                 group_by=["site"], group_wait="10s", group_interval="1m"),
                 {"readings"})  # fmt: skip
        feed(("d1", 50.0, "north"), ("d2", 51.0, "north"), ("d3", 52.0, "south"))
        await step(a)
        assert hook.accepted == [] and box.messages == []  # group_wait
        clock.advance(5_000)
        feed(("d4", 53.0, "north"))
        await step(a)
        assert hook.accepted == []
        clock.advance(5_000)  # 10 s after the first: both groups go
        await step(a)
        await until("two groups", lambda: len(hook.accepted) == 2 and len(box.messages) == 2)
        bodies = {r.json()["group"]: r.json() for r in hook.accepted}
        assert set(bodies) == {"site=north", "site=south"}
        north = bodies["site=north"]
        assert north["type"] == "alert.group" and north["title"] == "[FIRING:3] g site=north"
        assert sorted(x["key"] for x in north["alerts"]) == ["d1", "d2", "d4"]
        subjects = sorted(str(msg["Subject"]) for msg in box.messages)
        assert subjects == ["[FIRING:1] g site=south", "[FIRING:3] g site=north"]
        assert "d4 is at 53.0" in str(
            box.messages[
                [str(x["Subject"]) for x in box.messages].index("[FIRING:3] g site=north")
            ].get_payload()
        )

        # within group_interval, changes wait; then they go together
        feed(("d1", 10.0, "north"), ("d5", 60.0, "north"))
        clock.advance(30_000)
        await step(a)
        assert len(hook.accepted) == 2
        clock.advance(30_000)
        await step(a)
        await until("the second north batch", lambda: len(hook.accepted) == 3)
        third = hook.accepted[2].json()
        assert third["title"] == "[FIRING:1, RESOLVED:1] g site=north"
        assert {(x["key"], x["status"]) for x in third["alerts"]} == {("d1", "resolved"),
                                                                       ("d5", "firing")}  # fmt: skip
    finally:
        await a.dispatcher.drain(1.0)
        box.close()
        hook.close()


async def test_the_outbox_outlives_a_restart(parts: Parts) -> None:
    """Notifications saved with their state change are sent by the next process."""
    catalog, store, clock = parts
    hook = webhook_receiver(SECRET)
    a = Alerts(catalog, store, clock, POLICY)
    Feed(store)(("d1", 50.0, "n"), ("d2", 50.0, "n"))
    ch = [{"kind": "webhook", "url": hook.url, "secret": SECRET}]
    a.create("default", rule("o", ch), {"readings"})
    try:
        assert len(a.evaluate()) == 2  # saved, and the process "dies" before sending
        assert len(catalog.alert_outbox()) == 2
        again = Alerts(catalog, store, clock, POLICY)
        again.dispatcher.load()
        again.dispatcher.dispatch()
        await until("sent", lambda: len(hook.accepted) == 2 and not catalog.alert_outbox())
        assert sorted(r.json()["key"] for r in hook.accepted) == ["d1", "d2"]
        assert again.evaluate() == []  # and never announced twice
        await again.dispatcher.drain(1.0)
    finally:
        hook.close()


def test_bad_group_options_are_refused(parts: Parts) -> None:
    from headwater.errors import BadRequest

    catalog, store, clock = parts
    a = Alerts(catalog, store, clock, POLICY)
    ch = [{"kind": "slack", "url": "http://127.0.0.1:9/x"}]
    for extra, code in [({"group_by": ["nope"]}, "bad_alert_group"),
                        ({"group_by": "site"}, "bad_alert_group"),
                        ({"group_interval": "0s"}, "bad_alert_duration"),
                        ({"repeat": "1h", "repeat_interval": "1h"}, "bad_alert_duration")]:  # fmt: skip
        with pytest.raises(BadRequest) as err:
            a.create("default", rule("b", ch, **extra), {"readings"})
        assert err.value.code == code, extra
    HttpStandIn  # noqa: B018 - the stand-ins' type, for readers
