"""Queries over stored raw events: latency of the row API and of ad-hoc SQL.

Starts a fresh ``headwater serve``, loads ``--rows`` events of the ``bench`` stream
(10k devices, one event per 10 ms of event time) over HTTP, waits until the store holds
them, then times, one request at a time over keep-alive HTTP:

- ``GET /v1/streams/bench/events`` over a 1-minute event-time range, 100 rows;
- the same for one device (key filter);
- ``GET /v1/streams/bench/latest``: the latest row of one device, and of each of the 10k;
- ``GET /v1/streams/bench/events/count``;
- ``POST /v1/query``: an aggregate over every row (per-site count/avg/max), and a
  per-device top-10 over every row.

The baseline: the same SQL run by DuckDB in-process over a table of the same rows, so
the ratio is what serving it over HTTP, sandboxed, costs.

    python benchmarks/query.py [--rows 5000000] [--repeat 50]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from ingest import STREAM, load_average

from serverproc import ADMIN_KEY, Server

T0_MS = 1_795_000_000_000  # 2026-11-18T...; event time of row i is T0 + 10 ms * i
SITE_SQL = "SELECT site, count(*) AS n, avg(temperature) AS avg_t, max(temperature) AS max_t FROM bench GROUP BY site ORDER BY site"
TOP_SQL = "SELECT device_id, max(humidity) AS h FROM bench GROUP BY device_id ORDER BY h DESC, device_id LIMIT 10"


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def body(start: int, n: int) -> bytes:
    rows = (
        {
            "device_id": f"device-{i % 10_000:05d}",
            "ts": iso(T0_MS + 10 * i),
            "temperature": 20.0 + (i % 100) / 10,
            "humidity": (i * 7919) % 1000 / 10,
            "status": "ok",
            "site": f"plant-{i % 7}",
            "firmware": "v2.13.7-rc1",
            "seq": i,
        }
        for i in range(start, start + n)
    )
    return b"\n".join(map(orjson.dumps, rows)) + b"\n"


def load(c: httpx.Client, url: str, rows: int) -> float:
    """Send distinct 10k-event bodies from 8 threads (wrk would resend one body)."""
    import concurrent.futures as cf

    t = time.perf_counter()
    step = 10_000
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [
            pool.submit(
                c.post,
                url,
                content=body(s, min(step, rows - s)),
                headers={"Content-Type": "application/x-ndjson"},
                timeout=120,
            )
            for s in range(0, rows, step)
        ]
        for f in futures:
            r = f.result()
            assert r.status_code == 200, r.text
    return rows / (time.perf_counter() - t)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args()
    print(f"load average before: {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="hw-query-"))
    srv = Server(tmp / "data", HEADWATER_STORE_MAX_LAG_ROWS="1000000000").start()
    try:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=srv.url, headers=headers, timeout=120) as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            rate = load(c, "/v1/streams/bench/events", args.rows)
            count = c.get("/v1/streams/bench/events/count").json()["count"]
            assert count == args.rows, count
            print(
                f"loaded {args.rows:,} events at {rate:,.0f} events/s (8 client threads, 10k-event bodies)"
            )
            mid = T0_MS + 10 * (args.rows // 2)
            window = {"from": iso(mid), "to": iso(mid + 60_000), "limit": 100}
            cases: list[tuple[str, Callable[[], object]]] = [
                ("rows, 1-minute range, limit 100", lambda: c.get("/v1/streams/bench/events", params=window).raise_for_status()),
                ("rows of one device, limit 100", lambda: c.get("/v1/streams/bench/events", params={"device_id": "device-04242", "limit": 100}).raise_for_status()),
                ("latest row of one device", lambda: c.get("/v1/streams/bench/latest", params={"device_id": "device-04242"}).raise_for_status()),
                ("latest row of every device (10k rows)", lambda: c.get("/v1/streams/bench/latest", params={"n": 1}).raise_for_status()),
                ("count", lambda: c.get("/v1/streams/bench/events/count").raise_for_status()),
                ("SQL: per-site count/avg/max, all rows", lambda: c.post("/v1/query", json={"sql": SITE_SQL}).raise_for_status()),
                ("SQL: top-10 devices, all rows", lambda: c.post("/v1/query", json={"sql": TOP_SQL}).raise_for_status()),
            ]  # fmt: skip
            results = {name: timed(fn, args.repeat) for name, fn in cases}
        con = duckdb.connect()
        ndjson = tmp / "bench.ndjson"
        with ndjson.open("wb") as f:
            for start in range(0, args.rows, 100_000):
                f.write(body(start, min(100_000, args.rows - start)))
        con.execute(
            f"CREATE TABLE bench AS SELECT * FROM read_json('{ndjson}', format='newline_delimited')"
        )
        baseline = {
            "SQL: per-site count/avg/max, all rows": timed(lambda: con.execute(SITE_SQL).fetchall(), args.repeat),
            "SQL: top-10 devices, all rows": timed(lambda: con.execute(TOP_SQL).fetchall(), args.repeat),
        }  # fmt: skip
        print(f"one request at a time, {args.repeat} each (ms):")
        for name, (p50, p99) in results.items():
            line = f"  {name:40s} p50 {p50:8.1f}  p99 {p99:8.1f}"
            if name in baseline:
                b50 = baseline[name][0]
                line += f"   DuckDB in-process p50 {b50:7.1f}  ratio {p50 / b50:4.1f}x"
            print(line)
        print(f"load average after: {load_average()}")
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
