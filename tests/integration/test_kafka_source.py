"""Kafka sources against a real Kafka-compatible broker (Tansu): old and new messages,
quarantine, read_committed, config errors, and kill -9 with no loss and no duplicate."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import fastavro
import httpx
import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from kafka_broker import Tansu
from serverproc import Server

pytestmark = pytest.mark.kafka

# No "id" field: a duplicate would be stored twice, so the counts prove exactly-once.
STREAM = {
    "name": "orders",
    "fields": [
        {"name": "p", "type": "int", "required": True},
        {"name": "seq", "type": "int", "required": True, "min": 0},
        {"name": "amount", "type": "float"},
        {"name": "kafka_offset", "type": "int"},
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("kafka-src") / "data").start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
    yield srv
    srv.stop()


def source(broker: Tansu, name: str, topic: str, **config: Any) -> dict[str, Any]:
    return {
        "name": name, "kind": "kafka", "stream": "orders",
        "config": {"bootstrap": broker.bootstrap, "topics": [topic], "group": f"hw-{name}",
                   "session_timeout_ms": 1000, **config},
    }  # fmt: skip


def message(p: int, seq: int) -> tuple[int, bytes]:
    return p, orjson.dumps({"p": p, "seq": seq, "amount": 1.5})


def rows(c: httpx.Client, where: str) -> list[list[int]]:
    sql = f"SELECT p, seq FROM orders WHERE {where} ORDER BY p, seq"
    answer = c.post("/v1/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    return answer.json()["rows"]


def wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_reads_existing_and_new_messages_and_quarantines_bad_ones(
    server: Server, kafka_broker: Tansu
) -> None:
    kafka_broker.create_topic("orders-a", 3)
    old = [message(i % 3, i) for i in range(300)]
    kafka_broker.produce("orders-a", old)
    with server.client() as c:
        spec = source(kafka_broker, "shop", "orders-a", fields={"offset": "kafka_offset"})
        created = c.post("/v1/sources", json=spec)
        assert created.status_code == 201, created.text
        want = sorted([i % 3, i] for i in range(300))
        assert wait_for(lambda: rows(c, "seq < 1000") == want), rows(c, "seq < 1000")[:5]
        new = [message(i % 3, i) for i in range(1000, 1090)]
        bad = [(0, b'{"p": 0, "seq": -1}'), (1, b"not json"), (2, b"\xff\xfe binary")]
        kafka_broker.produce("orders-a", new + bad)
        want = sorted(want + [[i % 3, i] for i in range(1000, 1090)])
        assert wait_for(lambda: rows(c, "seq < 2000") == want), len(rows(c, "seq < 2000"))
        view = wait_for(lambda: (v := c.get("/v1/sources/shop").json())["rows_rejected"] == 3 and v)
        assert view["status"] == "running" and view["rows_in"] == 390, view
        # one position per topic-partition: the next offset, after the good and bad messages
        assert view["positions"] == {"orders-a/0": "131", "orders-a/1": "131",
                                     "orders-a/2": "131"}, view  # fmt: skip
        q = wait_for(lambda: (r := c.get("/v1/streams/orders/quarantine").json()["rows"])
                     and len(r) == 3 and r)  # fmt: skip
        assert {r["code"] for r in q} == {"below_min", "malformed_json", "not_an_object"}, q
        assert all(r["request_id"].startswith("source:shop:orders-a/") for r in q), q
        offsets = c.post("/v1/query", json={
            "sql": "SELECT p, min(kafka_offset), max(kafka_offset) FROM orders "
                   "WHERE seq < 2000 GROUP BY p ORDER BY p"}).json()["rows"]  # fmt: skip
        assert offsets == [[0, 0, 129], [1, 0, 129], [2, 0, 129]], offsets
        assert c.delete("/v1/sources/shop").status_code == 200


def test_an_open_transaction_is_read_only_once_committed(
    server: Server, kafka_broker: Tansu
) -> None:
    kafka_broker.create_topic("orders-tx", 2)
    with server.client() as c:
        assert (
            c.post("/v1/sources", json=source(kafka_broker, "tx", "orders-tx")).status_code == 201
        )
        tx = kafka_broker.producer(**{"transactional.id": "hw-test-tx", "enable.idempotence": True})
        tx.init_transactions(10)
        tx.begin_transaction()
        tx.produce("orders-tx", orjson.dumps({"p": 9, "seq": 5000}), partition=0)
        tx.flush(10)
        kafka_broker.produce("orders-tx", [(0, orjson.dumps({"p": 9, "seq": 5001}))])
        assert len(kafka_broker.read_all("orders-tx", 2)) == 2  # both are in the broker
        # a message sent after them to the other partition is stored: the source reads on
        kafka_broker.produce("orders-tx", [(1, orjson.dumps({"p": 8, "seq": 1}))])
        assert wait_for(lambda: rows(c, "p = 8") == [[8, 1]])
        assert rows(c, "p = 9") == []  # but partition 0 waits for the open transaction
        tx.commit_transaction(10)
        assert wait_for(lambda: rows(c, "p = 9") == [[9, 5000], [9, 5001]]), rows(c, "p = 9")
        assert c.delete("/v1/sources/tx").status_code == 200


def test_a_restart_seeks_to_headwaters_offsets_not_the_groups(
    server: Server, kafka_broker: Tansu
) -> None:
    kafka_broker.create_topic("orders-seek", 1)
    kafka_broker.produce("orders-seek", [(0, message(5, i)[1]) for i in range(100)])
    with server.client() as c:
        assert (
            c.post("/v1/sources", json=source(kafka_broker, "seek", "orders-seek")).status_code
            == 201
        )
        assert wait_for(lambda: len(rows(c, "p = 5")) == 100)
        assert c.post("/v1/sources/seek/pause").status_code == 200
        # the group's offset is moved back, as another tool might do: it must not matter
        rewind = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "hw-seek",
                           "enable.auto.commit": False})  # fmt: skip

        def rewound() -> bool:
            try:  # refused while the group still counts the paused consumer as a member
                rewind.commit(offsets=[TopicPartition("orders-seek", 0, 40)], asynchronous=False)
            except KafkaException:
                return False
            return bool(rewind.committed([TopicPartition("orders-seek", 0)], 10)[0].offset == 40)

        assert wait_for(rewound, 20)
        rewind.close()
        kafka_broker.produce("orders-seek", [(0, message(5, i)[1]) for i in range(100, 120)])
        assert c.post("/v1/sources/seek/resume").status_code == 200
        want = [[5, i] for i in range(120)]
        assert wait_for(lambda: rows(c, "p = 5") == want), rows(c, "p = 5")[-3:]
        assert c.get("/v1/sources/seek").json()["positions"] == {"orders-seek/0": "120"}
        assert c.delete("/v1/sources/seek").status_code == 200


ORDER_AVRO = {
    "type": "record", "name": "Order",
    "fields": [{"name": "p", "type": "int"}, {"name": "seq", "type": "long"},
               {"name": "amount", "type": ["null", "double"], "default": None}],
}  # fmt: skip


def test_avro_values_with_the_confluent_header(server: Server, kafka_broker: Tansu) -> None:
    kafka_broker.create_topic("orders-avro", 1)

    def framed(rec: dict[str, Any]) -> bytes:
        out = io.BytesIO(b"\0\0\0\0\x07")  # magic byte, schema id 7
        out.seek(5)
        fastavro.schemaless_writer(out, ORDER_AVRO, rec)
        return out.getvalue()

    good = [(0, framed({"p": 7, "seq": i, "amount": 2.5})) for i in range(50)]
    kafka_broker.produce("orders-avro", [*good, (0, b"\x01not avro")])
    with server.client() as c:
        spec = source(kafka_broker, "avro", "orders-avro", format="avro-confluent",
                      schema=ORDER_AVRO)  # fmt: skip
        assert c.post("/v1/sources", json=spec).status_code == 201
        assert wait_for(lambda: rows(c, "p = 7") == [[7, i] for i in range(50)])
        view = wait_for(lambda: (v := c.get("/v1/sources/avro").json())["rows_rejected"] == 1 and v)
        assert view["positions"] == {"orders-avro/0": "51"}, view
        assert c.delete("/v1/sources/avro").status_code == 200


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"topics": ["t"]}, "config.bootstrap"),
        ({"bootstrap": "127.0.0.1:9092"}, "config.topics"),
        ({"bootstrap": "h:1", "topics": ["t"], "start": "middle"}, "config.start"),
        ({"bootstrap": "h:1", "topics": ["t"], "format": "xml"}, "config.format"),
        ({"bootstrap": "h:1", "topics": ["t"], "format": "avro"}, "config.schema"),
        ({"bootstrap": "h:1", "topics": ["t"], "format": "avro", "schema": {"type": "rec"}},
         "config.schema"),
        ({"bootstrap": "h:1", "topics": ["t"], "fields": {"colour": "c"}}, "config.fields"),
        ({"bootstrap": "h:1", "topics": ["t"], "options": {"enable.auto.commit": "true"}},
         "config.options"),
        ({"bootstrap": "h:1", "topics": ["t"], "options": {"no.such.setting": "1"}},
         "No such configuration property"),
    ],
)  # fmt: skip
def test_a_config_it_cannot_run_is_a_400_saying_what_to_fix(
    server: Server, config: dict[str, Any], says: str
) -> None:
    with server.client() as c:
        answer = c.post(
            "/v1/sources",
            json={"name": "bad", "kind": "kafka", "stream": "orders", "config": config},
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "bad_source_config"
        assert says in answer.json()["error"]["message"]


def test_kill_9_mid_stream_resumes_at_the_committed_offsets(
    server: Server, kafka_broker: Tansu
) -> None:
    """The server is killed while it drains a backlog; after the restart every message of
    every partition is stored exactly once (the stream has no id: duplicates would show).
    Rows of partition n carry p = 20 + n."""
    parts, per_part = 4, 10_000
    kafka_broker.create_topic("orders-crash", parts)
    kafka_broker.produce(
        "orders-crash",
        ((i % parts, message(20 + i % parts, i // parts)[1]) for i in range(parts * per_part)),
    )
    with server.client() as c:
        spec = source(kafka_broker, "crash", "orders-crash", batch_max=300)
        assert c.post("/v1/sources", json=spec).status_code == 201
        at_kill = wait_for(lambda: (v := c.get("/v1/sources/crash").json())["rows_in"] > 3000 and v)
        assert at_kill["rows_in"] < parts * per_part, at_kill  # still draining
    server.kill()
    server.start()
    with server.client() as c:
        count = "SELECT count(*) FROM orders WHERE p >= 20"
        total = parts * per_part

        def stored() -> int:
            n: int = c.post("/v1/query", json={"sql": count}).json()["rows"][0][0]
            return n if n >= total else 0

        assert wait_for(stored) == total
        got = c.post("/v1/query", json={
            "sql": "SELECT p, count(*), count(DISTINCT seq), min(seq), max(seq) "
                   "FROM orders WHERE p >= 20 GROUP BY p ORDER BY p"}).json()["rows"]  # fmt: skip
        assert got == [[20 + p, per_part, per_part, 0, per_part - 1] for p in range(parts)], got
        view = c.get("/v1/sources/crash").json()
        assert view["status"] == "running"
        assert view["positions"] == {f"orders-crash/{p}": str(per_part) for p in range(parts)}
        assert c.delete("/v1/sources/crash").status_code == 200
