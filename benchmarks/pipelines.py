"""Pipelines end to end over a stored stream, next to the same query in DuckDB batch.

Starts a fresh ``headwater serve``, imports ``--events`` events (10k devices, one event
per millisecond of event time) as Parquet files into the stream ``ev``, waits until they
are stored, then creates one pipeline at a time, started from the beginning of the
stream, and times it from ``POST /v1/pipelines`` until its committed offset reaches the
end of the stream (results, state and offsets written):

- ``stateless``: a filter and a projection writing every row;
- ``windows``: per-device 1-minute tumbling windows (count, avg, max);
- ``top_n``: the 3 hottest devices of each minute (window Top-N);
- ``zscore``: a running z-score per device, writing every row;
- ``interval_join``: the stream joined with itself, each reading with the same device's
  readings of the next 15 s (itself and the next one, 10 s later: two rows per event).

The baseline is the same query run by DuckDB in-process over a table of the same rows,
writing its result to a table (``CREATE TABLE ... AS``), as the pipeline writes its
result table. Prints events/s of both and their ratio, and the CPU time the server
used per event while the pipeline ran (from ``/proc``; wall-clock rates on a shared
machine follow its load, CPU time much less).

    python benchmarks/pipelines.py                    # 10M events
    python benchmarks/pipelines.py --events 2000000
    python benchmarks/pipelines.py --workers 1        # operators in a worker process
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from headwater.engine.connection import connect_duckdb
from serverproc import Server, children, cpu_seconds

TS0_MS = 1_795_255_200_000  # 2026-11-21T10:00:00Z
KEYS = 10_000
FILE_ROWS = 1_000_000
STREAM = {
    "name": "ev",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float"},
        {"name": "status", "type": "string"},
        {"name": "seq", "type": "int"},
    ],
    "event_time": "ts",
}
W = "OVER (PARTITION BY device_id ORDER BY ts)"
TOP = (
    "SELECT device_id, window_start, max(temperature) AS hi, ROW_NUMBER() OVER (PARTITION BY "
    "window_start ORDER BY max(temperature) DESC) AS rn FROM TUMBLE(ev, ts, INTERVAL '1 minute') "
    "GROUP BY device_id, window_start, window_end QUALIFY rn <= 3"
)
# name -> (pipeline SQL, DuckDB batch SQL over table ``ev``)
QUERIES = {
    "stateless": (
        "SELECT device_id, ts, temperature * 1.8 + 32 AS fahrenheit, seq FROM ev "
        "WHERE status <> 'error'",
        "SELECT device_id, ts, temperature * 1.8 + 32 AS fahrenheit, seq FROM ev "
        "WHERE status <> 'error'",
    ),
    "windows": (
        "SELECT device_id, window_start, count(*) AS n, avg(temperature) AS avg_t, "
        "max(temperature) AS hi FROM TUMBLE(ev, ts, INTERVAL '1 minute') "
        "GROUP BY device_id, window_start, window_end",
        "SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS window_start, count(*) AS n, "
        "avg(temperature) AS avg_t, max(temperature) AS hi FROM ev GROUP BY 1, 2",
    ),
    "top_n": (
        TOP,
        "SELECT device_id, window_start, hi, rn FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY "
        "window_start ORDER BY hi DESC, device_id) AS rn FROM (SELECT device_id, "
        "time_bucket(INTERVAL '1 minute', ts) AS window_start, max(temperature) AS hi FROM ev "
        "GROUP BY 1, 2)) WHERE rn <= 3",
    ),
    "zscore": (
        f"SELECT device_id, ts, zscore(temperature) {W} AS z FROM ev",
        "SELECT device_id, ts, (temperature - avg(temperature) OVER w) / "
        "stddev_samp(temperature) OVER w AS z FROM ev WINDOW w AS (PARTITION BY device_id "
        "ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)",
    ),
    "interval_join": (
        "SELECT a.device_id, a.ts, b.ts AS later_ts, b.temperature - a.temperature AS delta "
        "FROM ev a JOIN ev b ON a.device_id = b.device_id "
        "AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '15 seconds'",
        "SELECT a.device_id, a.ts, b.ts AS later_ts, b.temperature - a.temperature AS delta "
        "FROM ev a JOIN ev b ON a.device_id = b.device_id "
        "AND b.ts BETWEEN a.ts AND a.ts + INTERVAL '15 seconds'",
    ),
}


def events(start: int, n: int) -> pa.Table:
    i = np.arange(start, start + n, dtype=np.int64)
    rng = np.random.default_rng(start)
    return pa.table(
        {
            "device_id": pa.array(np.char.add("device-", (i % KEYS).astype("U5"))),
            "ts": pa.array(TS0_MS + i, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "temperature": rng.normal(20.0, 2.0, n),
            "status": pa.array(np.where(i % 100 == 0, "warn", "ok")),
            "seq": i,
        }
    )


def load(c: httpx.Client, n: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, FILE_ROWS):
        buf = io.BytesIO()
        pq.write_table(events(start, min(FILE_ROWS, n - start)), buf, row_group_size=100_000)
        r = c.post("/v1/streams/ev/files", content=buf.getvalue(),
                   headers={"Content-Type": "application/vnd.apache.parquet"}, timeout=600)  # fmt: skip
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 600
    while c.get("/v1/streams/ev/events/count").json()["count"] < n:
        assert time.monotonic() < deadline, "the store did not catch up"
        time.sleep(0.2)
    return n / (time.perf_counter() - t0)


def run_pipeline(c: httpx.Client, name: str, sql: str, n: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = c.post("/v1/pipelines", json={"sql": f"CREATE PIPELINE {name} AS {sql}"})
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 3600
    while True:
        info = c.get(f"/v1/pipelines/{name}").json()
        if info.get("committed_offset", 0) >= n:
            break
        assert info.get("status") != "failed", info
        assert time.monotonic() < deadline, info
        time.sleep(0.25)  # each poll asks the pipeline for its status: not too often
    took = time.perf_counter() - t0
    assert c.delete(f"/v1/pipelines/{name}").status_code == 200
    return took, info["metrics"]


def run_batch(table: pa.Table, sql: str) -> float:
    con = connect_duckdb()
    con.register("ev", table)
    t0 = time.perf_counter()
    con.execute(f"CREATE TABLE result AS {sql}")
    took = time.perf_counter() - t0
    con.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--only", nargs="*", choices=list(QUERIES), default=list(QUERIES))
    ap.add_argument(
        "--workers", type=int, default=0, help="pipeline_workers: processes running the operators"
    )
    args = ap.parse_args()
    n = args.events
    work = Path(tempfile.mkdtemp(prefix="hw-pipelines-bench-"))
    srv = Server(
        work / "data", HEADWATER_STORE_MAX_LAG_ROWS="1000000000",
        HEADWATER_PIPELINE_WORKERS=str(args.workers),
    ).start()  # fmt: skip
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            rate = load(c, n)
            print(f"imported and stored {n:,} events ({rate:,.0f} events/s)")
            table = pa.concat_tables(
                events(s, min(FILE_ROWS, n - s)) for s in range(0, n, FILE_ROWS)
            )
            print(
                f"{'pipeline':<10} {'pipeline ev/s':>14} {'DuckDB ev/s':>12} {'ratio':>6} "
                f"{'server CPU us/ev':>16} {'workers CPU us/ev':>17}  rows out"
            )
            pid = srv.proc.pid if srv.proc is not None else 0
            workers = children(pid)
            for name in args.only:
                sql, batch = QUERIES[name]
                cpu0, wcpu0 = cpu_seconds(pid), sum(cpu_seconds(w) for w in workers)
                took, metrics = run_pipeline(c, f"bench_{name}", sql, n)
                cpu = cpu_seconds(pid) - cpu0
                wcpu = sum(cpu_seconds(w) for w in workers) - wcpu0
                batch_took = run_batch(table, batch)
                print(
                    f"{name:<10} {n / took:>14,.0f} {n / batch_took:>12,.0f} "
                    f"{batch_took / took:>6.2f} {cpu / n * 1e6:>16.2f} {wcpu / n * 1e6:>17.2f}"
                    f"  {metrics['rows_out']:,}"
                )
    finally:
        srv.stop()
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
