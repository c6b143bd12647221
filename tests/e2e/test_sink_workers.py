"""Sinks whose rows are encoded and delivered in worker processes (``sink_workers``),
through a real server: the same retries, dead letters, replays and figures as in the
server process, and a worker killed with SIGKILL mid-delivery loses no row."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from downstream import Answer, Downstream, events, sink_status, wait_until
from nats_server import NatsServer
from serverproc import READINGS, Server, children


def faults(i: int, d: Downstream) -> Answer:
    """Rate limits, outages, a reset connection; rows at 13.5 degrees are refused (422)."""
    if b"13.5" in d.seen[i].body:
        return Answer(422, body=b'{"error": "temperature 13.5 is not allowed"}')
    return {
        3: Answer(429, {"retry-after": "1"}),
        11: Answer(503),
        12: Answer(503),
        17: Answer(reset=True),
    }.get(i, Answer())


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path / "data", HEADWATER_SINK_WORKERS="1").start()
    yield srv
    srv.stop()


def metric(c: httpx.Client, name: str) -> float:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def ingest(c: httpx.Client, n: int, start: int = 0, poison: set[int] | None = None) -> None:
    answer = c.post("/v1/streams/readings/events", json=events(n, start, poison))
    assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text


def test_retries_dead_letters_and_replay_run_in_the_worker(server: Server) -> None:
    downstream = Downstream(faults).start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            r = c.post("/v1/sinks", json={
                "name": "partner", "kind": "webhook", "from": "readings",
                "config": {"url": downstream.url, "batch_rows": 1, "max_concurrency": 4,
                           "backoff_base_s": 0.05, "backoff_max_s": 0.5,
                           "secret": "whsec_c2VjcmV0"},
            })  # fmt: skip
            assert r.status_code == 201, r.text
            ingest(c, 40, poison={4, 20})
            st = wait_until(
                lambda: (
                    (s := sink_status(c, "partner"))["pending"] == 0
                    and s["produced"] == 40
                    and s["requests"] > 40
                    and s
                ),
                what="40 rows delivered or dead-lettered, and the worker's figures",
            )
            assert st["delivered"] == 38 and st["dead_lettered"] == 2
            assert st["rate_limit_hits"] >= 1 and st["failed_requests"] >= 4
            assert st["worker_pid"] in children(server.proc.pid)  # type: ignore[union-attr]
            assert metric(c, "headwater_sink_worker_processes") == 1
            dlq = c.post("/v1/query", json={
                "sql": "SELECT offset, attempts, last_status, state, row FROM partner_dlq "
                       "ORDER BY offset"}).json()["rows"]  # fmt: skip
            assert [(d[0], d[1], d[2], d[3]) for d in dlq] == [(4, 1, 422, "dead"),
                                                               (20, 1, 422, "dead")]  # fmt: skip
            assert '"event_id":"e4"' in dlq[0][4]

            downstream.script = lambda i, d: Answer()  # the partner fixed its validation
            assert c.post("/v1/sinks/partner/dlq/replay", json={"all": True}).json() == {
                "name": "partner", "replaying": 2}  # fmt: skip
            st = wait_until(lambda: (s := sink_status(c, "partner"))["dead_lettered"] == 0 and s)
            assert st["delivered"] == 40
            rows = c.get("/v1/tables/partner_dlq/rows").json()["rows"]
            assert sorted((d["offset"], d["state"]) for d in rows) == [(4, "replayed"),
                                                                      (20, "replayed")]  # fmt: skip
    finally:
        downstream.stop()
    delivered = downstream.delivered()
    assert sorted(s.key or "" for s in delivered) == sorted(f"partner-{i}" for i in range(40))
    bodies: dict[str | None, set[bytes]] = defaultdict(set)
    for s in downstream.seen:
        bodies[s.key].add(s.body)
        assert s.headers["webhook-signature"].startswith("v1,")  # signed in the worker
    assert all(len(b) == 1 for b in bodies.values())  # a key always names one body


def test_a_sink_worker_killed_mid_delivery_loses_no_row(server: Server) -> None:
    n = 400
    downstream = Downstream(lambda i, d: Answer(delay_s=0.02)).start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            r = c.post("/v1/sinks", json={
                "name": "partner", "kind": "http", "from": "readings",
                "config": {"url": downstream.url, "batch_rows": 5, "max_concurrency": 2,
                           "batch_age_ms": 0},
            })  # fmt: skip
            assert r.status_code == 201, r.text
            ingest(c, n)
            first = wait_until(
                lambda: len(downstream.delivered()) >= 10 and sink_status(c, "partner"),
                what="the first requests delivered",
            )
            os.kill(first["worker_pid"], signal.SIGKILL)
            st = wait_until(
                lambda: (s := sink_status(c, "partner"))["delivered"] == n and s,
                what=f"{n} rows delivered after the worker was killed",
            )
            assert st["produced"] == n and st["dead_lettered"] == 0 and st["pending"] == 0
            assert st["worker_pid"] != first["worker_pid"]
            assert st["worker_pid"] in children(server.proc.pid)  # type: ignore[union-attr]
            assert metric(c, "headwater_sink_worker_restarts_total") == 1
            assert metric(c, "headwater_sink_worker_processes") == 1
        server.kill()  # a server killed with SIGKILL leaves no worker behind
        wait_until(lambda: not Path(f"/proc/{st['worker_pid']}").exists(), what="the worker gone")
    finally:
        downstream.stop()
    rows = downstream.delivered_rows()
    assert {r["event_id"] for r in rows} == {f"e{i}" for i in range(n)}  # every row, at least once
    bodies: dict[str | None, set[bytes]] = defaultdict(set)
    for s in downstream.delivered():
        bodies[s.key].add(s.body)
    assert all(len(b) == 1 for b in bodies.values())  # a repeat carries the same key and body


def test_nats_sink_in_the_worker_publishes_each_row_once(server: Server, tmp_path: Path) -> None:
    bus = NatsServer(tmp_path)
    try:
        bus.add_stream("OUT", ["out.>"])
        with server.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            r = c.post("/v1/sinks", json={
                "name": "bus", "kind": "nats", "from": "readings",
                "config": {"url": bus.url, "subject": "out.readings", "stream": "OUT"},
            })  # fmt: skip
            assert r.status_code == 201, r.text
            ingest(c, 300)
            st = wait_until(lambda: (s := sink_status(c, "bus"))["delivered"] == 300 and s)
            assert "worker_pid" in st
        stored = bus.stream_messages("OUT")
        assert sorted(h["Nats-Msg-Id"] for _, _, h in stored) == sorted(
            f"bus-{i}" for i in range(300)
        )
    finally:
        bus.stop()
