"""NATS JetStream sinks against a real nats-server: Nats-Msg-Id dedup, kill -9, retries,
dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from downstream import events, sink_status, wait_until
from nats_server import NatsServer
from serverproc import READINGS, Server


def tenant(server: Server, name: str) -> httpx.Client:
    """A client of a new tenant of the module's server (its own streams, sources, sinks)."""
    with server.client() as c:
        answer = c.post("/v1/tenants", json={"name": name})
        assert answer.status_code == 201, answer.text
    return server.client(answer.json()["admin_key"]["key"])


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    s = NatsServer(tmp_path)
    s.add_stream("OUT", ["out.>"])
    yield s
    s.stop()


def sink(ns: NatsServer, name: str = "bus", **config: Any) -> dict[str, Any]:
    return {"name": name, "kind": "nats", "from": "readings",
            "config": {"url": ns.url, "subject": "out.readings", **config}}  # fmt: skip


def ingest(c: httpx.Client, n: int, start: int = 0) -> None:
    answer = c.post("/v1/streams/readings/events", json=events(n, start))
    assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text


def test_rows_published_once_with_their_idempotency_key(
    server: Server, nats_server: NatsServer
) -> None:
    with tenant(server, "bus_tenant") as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
        created = c.post("/v1/sinks", json=sink(nats_server, stream="OUT", password="pw"))
        assert created.status_code == 201, created.text
        assert created.json()["config"]["password"] == "***"
        ingest(c, 200)
        wait_until(lambda: sink_status(c, "bus")["delivered"] == 200, what="200 delivered")
        st = sink_status(c, "bus")
        assert st["pending"] == 0 and st["dead_lettered"] == 0 and st["status"] == "running"
    stored = nats_server.stream_messages("OUT")
    assert len(stored) == 200
    keys = sorted(h["Nats-Msg-Id"] for _, _, h in stored)
    assert keys == sorted(f"bus-{i}" for i in range(200))  # a stream row's key: its offset
    rows = [orjson.loads(data) for _, data, _ in stored]
    assert sorted(r["event_id"] for r in rows) == sorted(f"e{i}" for i in range(200))
    assert all(subject == "out.readings" for subject, _, _ in stored)
    # the same key again, inside the duplicate window: JetStream stores it once
    subject, data, headers = stored[7]
    acks = nats_server.run(
        lambda js: js.publish(subject, data, headers={"Nats-Msg-Id": headers["Nats-Msg-Id"]})
    )
    assert acks.duplicate is True
    assert len(nats_server.stream_messages("OUT")) == 200


def test_kill_9_mid_delivery_stores_every_row_once(tmp_path: Path, nats_server: NatsServer) -> None:
    """Killed while messages are in flight: the replay re-sends the uncommitted ones with
    the same Nats-Msg-Id, and JetStream keeps one copy of each."""
    total = 3000
    srv = Server(tmp_path / "data").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            spec = sink(nats_server, max_concurrency=8)
            assert c.post("/v1/sinks", json=spec).status_code == 201
            ingest(c, total)
            wait_until(lambda: sink_status(c, "bus")["delivered"] > 300, what="delivering")
            assert sink_status(c, "bus")["delivered"] < total  # still delivering
        srv.kill()
        srv.start()
        with srv.client() as c:
            st = wait_until(
                lambda: (s := sink_status(c, "bus"))["delivered"] == total and s,
                what="every row delivered after the restart",
            )
            assert st["pending"] == 0 and st["dead_lettered"] == 0, st
    finally:
        srv.stop()
    stored = nats_server.stream_messages("OUT")
    ids = [orjson.loads(data)["event_id"] for _, data, _ in stored]
    assert sorted(ids) == sorted(f"e{i}" for i in range(total))  # each once


def test_an_unreachable_server_is_retried_and_a_refusal_dead_lettered(
    server: Server, nats_server: NatsServer
) -> None:
    with tenant(server, "retry_tenant") as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
        nats_server.kill()
        spec = sink(nats_server, backoff_base_s=0.05, backoff_max_s=0.3, breaker_open_s=0.5)
        assert c.post("/v1/sinks", json=spec).status_code == 201
        ingest(c, 20)
        down = wait_until(
            lambda: (s := sink_status(c, "bus"))["failed_requests"] > 0 and s, what="retries"
        )
        assert down["delivered"] == 0 and down["pending"] == 20, down
        nats_server.start()
        wait_until(lambda: sink_status(c, "bus")["delivered"] == 20, what="delivered after")
        # a stream other than the one expected refuses: dead letters, with the reason
        wrong = sink(nats_server, "wrong", stream="ELSEWHERE")
        assert c.post("/v1/sinks", json=wrong).status_code == 201
        st = wait_until(
            lambda: (s := sink_status(c, "wrong"))["dead_lettered"] == 20 and s, what="dlq"
        )
        assert st["delivered"] == 0, st
        dlq = c.post("/v1/query", json={"sql": "SELECT count(*) FROM wrong_dlq"}).json()
        assert dlq["rows"] == [[20]], dlq
    assert len(nats_server.stream_messages("OUT")) == 20


@pytest.mark.parametrize(
    ("config", "field"),
    [({"url": "http://x", "subject": "a"}, "url"), ({"url": "nats://h:1", "subject": "a.*"}, "subject"),
     ({"url": "nats://h:1"}, "subject"), ({"url": "nats://h:1", "subject": "a", "x": 1}, "x")],
)  # fmt: skip
def test_a_bad_config_is_refused(server: Server, config: dict[str, Any], field: str) -> None:
    with server.client() as c:
        c.post("/v1/streams", json=READINGS)
        answer = c.post("/v1/sinks", json={"name": "b", "kind": "nats", "from": "readings",
                                           "config": config})  # fmt: skip
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_sink_config"
        assert field in answer.json()["error"]["message"], answer.text
