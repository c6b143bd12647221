"""Alerts through a real server: a rule with ``for``, signed webhook notifications,
history, snooze, a restart that neither forgets nor re-announces, bad rules refused."""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from alert_services import HttpStandIn, signature_ok, webhook_receiver
from serverproc import Server

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STREAM = {
    "name": "readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float"},
    ],
    "event_time": "ts",
}


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if out := check():
            return out
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def send(c: httpx.Client, device: str, temperature: float) -> None:
    ev = {"device_id": device, "ts": datetime.now(UTC).isoformat(), "temperature": temperature}
    assert c.post("/v1/streams/readings/events", json=ev).status_code in (200, 202)


def got(hook: HttpStandIn, device: str) -> list[str]:
    return [r.json()["status"] for r in hook.accepted if r.json()["key"] == device]


def key_state(c: httpx.Client, device: str) -> dict[str, Any] | None:
    keys = c.get("/v1/alerts/hot").json()["keys"]
    return next((k for k in keys if k["key"] == device), None)


def history(c: httpx.Client, device: str) -> list[tuple[str, str | None]]:
    events = c.get("/v1/alerts/hot/events?limit=1000").json()["events"]
    return [(e["kind"], e.get("status")) for e in reversed(events) if e["key"] == device]


@pytest.fixture
def hook() -> Iterator[HttpStandIn]:
    h = webhook_receiver(SECRET)
    yield h
    h.close()


def test_alert_lifecycle(tmp_path: Path, hook: HttpStandIn) -> None:
    srv = Server(tmp_path / "data", HEADWATER_ALERT_EVAL_INTERVAL_S="0.1").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            rule = {"name": "hot", "from": "readings", "key": "device_id",
                    "condition": "temperature > 40", "for": "2 seconds", "severity": "critical",
                    "summary": "$device_id is at $temperature",
                    "channels": [{"kind": "webhook", "url": hook.url, "secret": SECRET}]}  # fmt: skip
            r = c.post("/v1/alerts", json=rule)
            assert r.status_code == 201, r.text
            assert r.json()["channels"][0]["secret"] == "***"

            # crossing: pending first, firing after 2 s of processing time, one notification
            started = time.monotonic()
            send(c, "dev-a", 45.5)
            send(c, "dev-b", 41.0)
            send(c, "dev-c", 12.0)
            wait_for("pending", lambda: (key_state(c, "dev-a") or {}).get("state") == "pending")
            wait_for("two fires", lambda: len(hook.accepted) == 2)
            assert time.monotonic() - started >= 2.0
            assert got(hook, "dev-a") == ["firing"] and got(hook, "dev-b") == ["firing"]
            assert all(signature_ok(SECRET, r.headers, r.body) for r in hook.accepted)
            assert hook.accepted[0].json()["summary"] in ("dev-a is at 45.5", "dev-b is at 41.0")
            assert key_state(c, "dev-c") is None
            send(c, "dev-a", 46.0)  # still hot: no new notification

            # returning: one resolve each
            send(c, "dev-a", 20.0)
            send(c, "dev-b", 30.0)
            wait_for("two resolves", lambda: len(hook.accepted) == 4)
            assert got(hook, "dev-a") == ["firing", "resolved"]
            assert got(hook, "dev-b") == ["firing", "resolved"]
            assert c.get("/v1/alerts/hot").json()["keys"] == []
            wait_for("history", lambda: history(c, "dev-a") == [
                ("fired", None), ("notified", "firing"), ("resolved", None),
                ("notified", "resolved")])  # fmt: skip

            # snoozed: the key's changes are recorded, nothing is sent
            until = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
            assert (
                c.post("/v1/alerts/hot/snooze", json={"until": until, "key": "dev-d"}).status_code
                == 200
            )
            send(c, "dev-d", 50.0)
            wait_for("dev-d fires", lambda: (key_state(c, "dev-d") or {}).get("state") == "firing")
            send(c, "dev-d", 10.0)
            wait_for("dev-d resolves", lambda: ("resolved", None) in history(c, "dev-d"))
            assert got(hook, "dev-d") == []

            # a key firing across a restart is neither forgotten nor announced again
            send(c, "dev-e", 60.0)
            wait_for("dev-e fires", lambda: got(hook, "dev-e") == ["firing"])
            before = key_state(c, "dev-e")
        srv.stop()
        srv.start()
        with srv.client() as c:
            assert key_state(c, "dev-e") == before
            send(c, "dev-e", 15.0)
            wait_for("dev-e resolves", lambda: got(hook, "dev-e") == ["firing", "resolved"])
            assert len(hook.accepted) == 6
    finally:
        srv.stop()


def test_bad_rules_are_refused(server: Server) -> None:
    with server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        ch = [{"kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": SECRET}]
        base = {"name": "r1", "from": "readings", "key": "device_id", "channels": ch}
        cases = [
            ({"condition": "temperature >"}, "bad_alert_condition"),
            ({"condition": "humidity > 3"}, "bad_alert_condition"),
            ({"condition": "temperature + 1"}, "bad_alert_condition"),
            ({"condition": "repeat('x', 100000000) = 'a'"}, "bad_alert_condition"),
            ({"condition": "(SELECT 1) = 1"}, "bad_alert_condition"),
            ({"condition": "temperature > 40", "key": "nope"}, "bad_alert_key"),
            ({"condition": "temperature > 40", "from": "nothing"}, "unknown_table"),
            ({"condition": "temperature > 40", "for": "soon"}, "bad_alert_duration"),
            ({"condition": "temperature > 40", "channels": []}, "bad_alert_channel"),
            (
                {
                    "condition": "temperature > 40",
                    "channels": [{"kind": "webhook", "url": "http://x", "secret": "plain"}],
                },
                "bad_alert_channel",
            ),
        ]
        for change, code in cases:
            r = c.post("/v1/alerts", json={**base, **change})
            assert r.status_code == 400 and r.json()["error"]["code"] == code, (change, r.text)
        assert c.get("/v1/alerts/r1").status_code == 404
        assert c.post("/v1/alerts/r1/snooze", json={"until": "x"}).status_code == 404
        assert c.get("/v1/alerts/r1/events?limit=0").status_code in (400, 404)

        # another tenant cannot read this tenant's stream
        other = c.post("/v1/tenants", json={"name": "alerts_other"}).json()["admin_key"]["key"]
        with server.client(other) as o:
            r = o.post("/v1/alerts", json={**base, "condition": "temperature > 40"})
            assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_table"

        # a rule, then silences
        assert (
            c.post("/v1/alerts", json={**base, "condition": "temperature > 40"}).status_code == 201
        )
        assert (
            c.post("/v1/alerts", json={**base, "condition": "temperature > 40"}).status_code == 409
        )
        s = c.post("/v1/silences", json={"start": "2026-01-01T00:00:00Z",
                                         "end": "2026-01-01T02:00:00Z", "labels": {"team": "ops"}})  # fmt: skip
        assert s.status_code == 201
        assert [x["id"] for x in c.get("/v1/silences").json()["silences"]] == [s.json()["id"]]
        r = c.post(
            "/v1/silences", json={"start": "2026-01-01T02:00:00Z", "end": "2026-01-01T00:00:00Z"}
        )
        assert r.status_code == 400
        assert c.delete(f"/v1/silences/{s.json()['id']}").status_code == 200
        assert c.get("/v1/silences").json()["silences"] == []
        assert c.delete("/v1/alerts/r1").status_code == 200
        assert c.get("/v1/alerts").json()["alerts"] == []


def test_the_docs_example_runs(fresh_server: Server) -> None:
    """Every request of the first example in docs/alerts.md answers 2xx."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "alerts.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    commands = ["curl " + c for c in block.split("\ncurl ")[1:]]
    assert len(commands) == 7
    with fresh_server.client() as c:
        for cmd in commands:
            tokens = shlex.split(cmd, comments=True)
            method = tokens[tokens.index("-X") + 1] if "-X" in tokens else None
            body = tokens[tokens.index("-d") + 1] if "-d" in tokens else None
            url = next(t for t in tokens if t.startswith("localhost:8000"))
            path = url.removeprefix("localhost:8000")
            if method is None:
                method = "POST" if body is not None else "GET"
            r = c.request(method, path, content=body)
            assert r.status_code < 300, (cmd, r.text)


def test_alert_on_a_pipelines_results(tmp_path: Path, hook: HttpStandIn) -> None:
    """The issue's example: ``avg_t > 40`` on per-minute averages, keyed by device."""
    srv = Server(tmp_path / "data", HEADWATER_ALERT_EVAL_INTERVAL_S="0.1").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            sql = ("CREATE PIPELINE device_minute AS SELECT device_id, window_start, window_end, "
                   "avg(temperature) AS avg_t FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
                   "GROUP BY device_id, window_start, window_end WITH (watermark_delay = '0 seconds')")  # fmt: skip
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            rule = {"name": "hot_minute", "from": "device_minute", "key": "device_id",
                    "condition": "avg_t > 40", "summary": "$device_id averaged $avg_t",
                    "channels": [{"kind": "webhook", "url": hook.url, "secret": SECRET}]}  # fmt: skip
            r = c.post("/v1/alerts", json=rule)
            assert r.status_code == 201, r.text

            def at(minute: int, second: int, device: str, t: float) -> dict[str, Any]:
                ts = f"2026-01-01T10:{minute:02d}:{second:02d}Z"
                return {"device_id": device, "ts": ts, "temperature": t}

            def post(*events: dict[str, Any]) -> None:
                assert c.post("/v1/streams/readings/events", json=list(events)).status_code < 300

            post(at(0, 10, "a", 50.0), at(0, 20, "a", 44.0), at(0, 30, "b", 20.0))
            post(at(1, 5, "b", 20.0))  # the watermark passes 10:01: the 10:00 windows close
            wait_for("a fires", lambda: len(hook.accepted) == 1)
            assert hook.accepted[0].json()["summary"] == "a averaged 47.0"
            post(at(1, 10, "a", 30.0))
            post(at(2, 5, "b", 20.0))  # 10:01 closes: a averaged 30
            wait_for("a resolves", lambda: len(hook.accepted) == 2)
            assert [r.json()["status"] for r in hook.accepted] == ["firing", "resolved"]
            assert {r.json()["key"] for r in hook.accepted} == {"a"}
    finally:
        srv.stop()


def test_notifications_survive_kill_and_dead_letters_replay(tmp_path: Path) -> None:
    """A notification saved with its state change is delivered after ``kill -9``; one
    refused with a 4xx lands in ``hot_dlq``, queryable, and a replay delivers it once."""
    answers: dict[str, int] = {"status": 503}
    hook = HttpStandIn(lambda req, n: (answers["status"], {}, b""))
    env = {"HEADWATER_ALERT_EVAL_INTERVAL_S": "0.1", "HEADWATER_ALERT_DELIVERY_ATTEMPTS": "1000",
           "HEADWATER_ALERT_RETRY_BASE_S": "0.05", "HEADWATER_ALERT_RETRY_CAP_S": "0.2"}  # fmt: skip
    srv = Server(tmp_path / "data", **env).start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            rule = {"name": "hot", "from": "readings", "key": "device_id",
                    "condition": "temperature > 40",
                    "channels": [{"kind": "webhook", "url": hook.url, "secret": SECRET}]}  # fmt: skip
            assert c.post("/v1/alerts", json=rule).status_code == 201
            send(c, "dev-k", 55.0)
            wait_for("retries", lambda: len(hook.seen) >= 3)  # fired, saved, being retried
            assert hook.accepted == []
        srv.kill()
        answers["status"] = 204
        srv.start()
        with srv.client() as c:
            wait_for("delivered after the restart", lambda: got(hook, "dev-k") == ["firing"])
            ids = {r.headers["webhook-id"] for r in hook.seen}
            assert len(ids) == 1  # every attempt, before and after the crash, one id

            answers["status"] = 400  # the receiver refuses the next one: a dead letter
            send(c, "dev-k", 10.0)

            def dead() -> list[dict[str, Any]]:
                q = c.post("/v1/query", json={"sql": "SELECT key, last_status, state, attempts "
                                              "FROM hot_dlq"})  # fmt: skip
                if q.status_code != 200:
                    return []
                return [dict(zip(q.json()["columns"], r, strict=True)) for r in q.json()["rows"]]

            [letter] = wait_for("a dead letter", dead)
            assert letter["last_status"] == 400 and letter["state"] == "dead"
            assert letter["attempts"] == 1
            answers["status"] = 204
            r = c.post("/v1/alerts/hot/dlq/replay", json={"all": True})
            assert r.status_code == 200 and r.json()["replaying"] == 1
            wait_for("replayed", lambda: got(hook, "dev-k") == ["firing", "resolved"])
            wait_for("marked", lambda: dead() and dead()[0]["state"] == "replayed")
            assert c.post("/v1/alerts/hot/dlq/replay", json={"all": True}).json()["replaying"] == 0
            assert c.post("/v1/alerts/hot/dlq/replay", json={}).status_code == 400
            kinds = [e["kind"] for e in c.get("/v1/alerts/hot/events").json()["events"]]
            assert kinds[:3] == ["replayed", "failed", "resolved"]
    finally:
        srv.stop()
        hook.close()
