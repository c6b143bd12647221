"""Kafka sinks against a real Kafka-compatible broker (Tansu), through a real server:
one message per row with its idempotency key in a header, keyed by fields; a row the
broker refuses is dead-lettered alone; a broker that is down is waited for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from kafka_broker import Tansu
from serverproc import Server

pytestmark = pytest.mark.kafka

STREAM = {
    "name": "metrics",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "n", "type": "int", "required": True},
        {"name": "note", "type": "string"},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("kafka-sink") / "data").start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
    yield srv
    srv.stop()


def wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def sink(c: httpx.Client, name: str, bootstrap: str, topic: str, **config: Any) -> None:
    r = c.post("/v1/sinks", json={
        "name": name, "kind": "kafka", "from": "metrics",
        "config": {"bootstrap": bootstrap, "topic": topic, "key_fields": ["device_id"],
                   "backoff_base_s": 0.05, "backoff_max_s": 0.5, **config},
    })  # fmt: skip
    assert r.status_code == 201, r.text


def settled(c: httpx.Client, name: str, produced: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        s: dict[str, Any] = c.get(f"/v1/sinks/{name}").json()
        assert s["produced"] == s["delivered"] + s["dead_lettered"] + s["pending"], s
        return s if s["produced"] >= produced and s["pending"] == 0 else None

    st = wait_for(check)
    assert st, c.get(f"/v1/sinks/{name}").json()
    return st


def test_rows_are_messages_keyed_by_field_with_the_idempotency_key_header(
    server: Server, kafka_broker: Tansu
) -> None:
    keyed_messages_with_one_dead_letter(server, kafka_broker, "metrics-out")


def test_the_same_from_a_sink_worker_process(tmp_path: Path, kafka_broker: Tansu) -> None:
    srv = Server(tmp_path / "data", HEADWATER_SINK_WORKERS="1").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
        keyed_messages_with_one_dead_letter(srv, kafka_broker, "metrics-out-w")
        with srv.client() as c:
            assert "worker_pid" in c.get("/v1/sinks/to_kafka").json()
    finally:
        srv.stop()


def keyed_messages_with_one_dead_letter(server: Server, kafka_broker: Tansu, topic: str) -> None:
    kafka_broker.create_topic(topic, 3)
    with server.client() as c:
        sink(c, "to_kafka", kafka_broker.bootstrap, topic,
             options={"message.max.bytes": "4000"})  # fmt: skip
        rows = [{"device_id": f"d{i % 5}", "n": i} for i in range(500)]
        rows.insert(250, {"device_id": "big", "n": -1, "note": "x" * 10_000})  # refused alone
        assert c.post("/v1/streams/metrics/events", json=rows).json()["accepted"] == 501
        st = settled(c, "to_kafka", 501)
        assert (st["delivered"], st["dead_lettered"]) == (500, 1), st
        dlq = c.post("/v1/query", json={
            "sql": "SELECT offset, state, error, row FROM to_kafka_dlq"}).json()["rows"]  # fmt: skip
        assert len(dlq) == 1 and dlq[0][0] == 250 and dlq[0][1] == "dead", dlq
        assert "SIZE" in dlq[0][2] and '"device_id":"big"' in dlq[0][3], dlq
        # a replay produces it again through the same delivery: refused again, still dead
        assert c.post("/v1/sinks/to_kafka/dlq/replay", json={"all": True}).json()["replaying"] == 1
        sql = "SELECT state, attempts FROM to_kafka_dlq"
        again = wait_for(lambda: (r := c.post("/v1/query", json={"sql": sql}).json()["rows"])
                         == [["dead", 2]] and r)  # fmt: skip
        assert again, c.post("/v1/query", json={"sql": sql}).json()
        st = settled(c, "to_kafka", 501)
        assert (st["delivered"], st["dead_lettered"]) == (500, 1), st
    msgs = kafka_broker.read_all(topic, 500)
    assert len(msgs) == 500
    seen = {}
    partitions: dict[bytes, set[int]] = {}
    for m in msgs:
        row = orjson.loads(m.value())
        assert m.key() == row["device_id"].encode()
        partitions.setdefault(m.key(), set()).add(m.partition())
        headers = dict(m.headers() or [])
        seen[headers["Idempotency-Key"]] = row["n"]
    assert all(len(p) == 1 for p in partitions.values())  # one key, one partition
    # the key of a stream row is the sink and its log offset: one per row, none twice
    assert sorted(seen.values()) == list(range(500))
    assert all(k.startswith(b"to_kafka-") for k in seen)


def test_a_broker_that_is_down_is_waited_for_nothing_is_dead_lettered(
    server: Server, tmp_path: Path
) -> None:
    later = Tansu(tmp_path)  # its port is chosen; nothing listens there yet
    with server.client() as c:
        sink(c, "later", later.bootstrap, "metrics-later", timeout_s=1)
        rows = [{"device_id": "dx", "n": i} for i in range(1000, 1050)]
        assert c.post("/v1/streams/metrics/events", json=rows).json()["accepted"] == 50
        down = wait_for(lambda: (s := c.get("/v1/sinks/later").json())["failed_requests"] > 0 and s)
        assert down["pending"] > 0 and down["dead_lettered"] == 0, down
        later.start()
        try:
            # no topic made: the broker makes it when the sink first sends to it
            st = settled(c, "later", 50)
            assert st["dead_lettered"] == 0 and st["delivered"] >= 50, st
            msgs = later.read_all("metrics-later", st["delivered"])
            keys = {dict(m.headers() or [])["Idempotency-Key"] for m in msgs}
            ns = sorted({orjson.loads(m.value())["n"] for m in msgs if m.value()})
            assert [n for n in ns if n >= 1000] == list(range(1000, 1050))
            assert len(keys) >= 50  # every row carries its key, retried ones the same one
        finally:
            later.stop()


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"topic": "t"}, "bootstrap"),
        ({"bootstrap": "h:1", "topic": "a/b"}, "topic"),
        ({"bootstrap": "h:1", "topic": "t", "options": {"enable.idempotence": "true"}}, "options"),
        ({"bootstrap": "h:1", "topic": "t", "options": {"security.protocol": "bogus"}}, "options"),
    ],
)
def test_a_config_it_cannot_run_is_a_400_naming_the_option(
    server: Server, config: dict[str, Any], field: str
) -> None:
    with server.client() as c:
        r = c.post("/v1/sinks", json={"name": "bad", "kind": "kafka", "from": "metrics",
                                      "config": config})  # fmt: skip
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_sink_config"
        assert field in r.json()["error"]["message"]
        assert c.get("/v1/sinks/bad").status_code == 404


def test_kill_9_mid_delivery_loses_no_row_and_repeats_a_row_only_under_its_key(
    tmp_path: Path, kafka_broker: Tansu
) -> None:
    """Killed while messages are in flight: the restart delivers every row; a row sent
    twice (sent, not yet committed) carries the same Idempotency-Key both times."""
    kafka_broker.create_topic("killed-out", 2)
    total = 3000
    srv = Server(tmp_path / "data").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            # small batches, one at a time: still delivering when the server is killed
            sink(c, "killed", kafka_broker.bootstrap, "killed-out", max_concurrency=1,
                 batch_rows=10)  # fmt: skip
            for start in range(0, total, 500):
                rows = [{"device_id": f"d{i % 7}", "n": i} for i in range(start, start + 500)]
                assert c.post("/v1/streams/metrics/events", json=rows).json()["accepted"] == 500
            assert wait_for(lambda: c.get("/v1/sinks/killed").json()["delivered"] > 300)
            assert c.get("/v1/sinks/killed").json()["delivered"] < total  # still delivering
        srv.kill()
        srv.start()
        with srv.client() as c:
            st = settled(c, "killed", total)
            assert st["dead_lettered"] == 0, st
    finally:
        srv.stop()
    msgs = kafka_broker.read_all("killed-out", kafka_broker.count("killed-out"))
    rows_of: dict[bytes, set[int]] = {}
    for m in msgs:
        key = dict(m.headers() or [])["Idempotency-Key"]
        rows_of.setdefault(key, set()).add(orjson.loads(m.value())["n"])
    assert sorted(n for ns in rows_of.values() for n in ns) == list(range(total))  # each once
    assert all(len(ns) == 1 for ns in rows_of.values())  # a key names one row
    assert len(msgs) - total < total  # repeats: what was in flight, not a replay of all
