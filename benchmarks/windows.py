"""Windowed aggregation: the streaming engine against DuckDB batch on the same data.

Per-device 1-minute tumbling count/avg/max over N events from 10k devices (10k
events/s of event time, slightly out of order), fed to a pipeline in 100k-row
micro-batches; the same query then runs once in DuckDB over all the rows. Prints
both rates, their ratio, and checks the two results agree.

    python benchmarks/windows.py                 # 10M events
    python benchmarks/windows.py --events 1000000 --batch 10000 --emit changes --filter
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa

from headwater.engine import Pipeline

SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("temperature", pa.float64()),
        ("status", pa.string()),
    ]
)
PIPELINE = """CREATE PIPELINE device_minute AS
SELECT device_id, window_start, window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp
FROM TUMBLE(readings, ts, INTERVAL '1 minute'){where}
GROUP BY device_id, window_start, window_end
WITH (watermark_delay = '5 seconds', emit = '{emit}')"""
BATCH_SQL = """SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS window_start,
       time_bucket(INTERVAL '1 minute', ts) + INTERVAL '1 minute' AS window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp
FROM readings{where} GROUP BY ALL"""
FILTER = "\nWHERE status <> 'error'"


def make_events(n: int, devices: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"device-{i:05d}" for i in range(devices)], dtype=object)
    start = 1_767_225_600_000
    ts = start + np.arange(n, dtype=np.int64) * 1_000 // devices  # 10k events/s for 10k devices
    ts += rng.integers(-2_000, 1, n)  # up to 2 s out of order, within the watermark delay
    return pa.table(
        {
            "device_id": pa.array(names[rng.integers(0, devices, n)], pa.string()),
            "ts": pa.array(ts, pa.int64()).cast(SCHEMA.field("ts").type),
            "temperature": rng.normal(20.0, 5.0, n),
            "status": pa.array(np.where(rng.random(n) < 0.05, "error", "ok")),
        },
        schema=SCHEMA,
    )


def run_pipeline(events: pa.Table, batch: int, emit: str, where: str) -> tuple[float, pa.Table]:
    pipeline = Pipeline.from_sql(PIPELINE.format(emit=emit, where=where), SCHEMA)
    batches = events.to_batches(max_chunksize=batch)
    outputs = []
    started = time.perf_counter()
    for i, b in enumerate(batches):
        out = pipeline.process(b, now_ms=i)
        if out.upserts is not None:
            outputs.append(out.upserts)
    last = pipeline.finish(now_ms=len(batches))
    elapsed = time.perf_counter() - started
    if last.upserts is not None:
        outputs.append(last.upserts)
    return elapsed, pa.concat_tables(outputs)


def run_duckdb(events: pa.Table, where: str) -> tuple[float, pa.Table]:
    con = duckdb.connect()
    con.register("readings", events)
    started = time.perf_counter()
    result = con.sql(BATCH_SQL.format(where=where)).to_arrow_table()
    return time.perf_counter() - started, result


def agree(streamed: pa.Table, batch: pa.Table) -> bool:
    con = duckdb.connect()
    con.register("s", streamed)
    con.register("b", batch)
    diff = con.sql(
        """SELECT count(*) FROM (SELECT device_id, window_start, last(n ORDER BY n) AS n,
               last(avg_temp ORDER BY n) AS a, last(max_temp ORDER BY n) AS m
             FROM s GROUP BY ALL) s
           FULL JOIN b USING (device_id, window_start)
           WHERE s.n IS DISTINCT FROM b.n OR abs(s.a - b.avg_temp) > 1e-9
              OR s.m IS DISTINCT FROM b.max_temp"""
    ).fetchall()
    return diff[0][0] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--emit", choices=["final", "changes"], default="final")
    parser.add_argument("--filter", action="store_true", help="add WHERE status <> 'error'")
    args = parser.parse_args()
    where = FILTER if args.filter else ""
    events = make_events(args.events, args.devices)
    print(f"{args.events:,} events, {args.devices:,} devices, {args.batch:,}-row batches")
    db_s, db_result = run_duckdb(events, where)
    hw_s, hw_result = run_pipeline(events, args.batch, args.emit, where)
    db_rate, hw_rate = args.events / db_s, args.events / hw_s
    print(f"DuckDB batch      : {db_rate / 1e6:6.2f} M events/s ({db_s:.2f} s)")
    print(f"pipeline emit={args.emit:<7}: {hw_rate / 1e6:6.2f} M events/s ({hw_s:.2f} s)")
    print(f"ratio pipeline / DuckDB: {hw_rate / db_rate:.2f}")
    print(f"results agree: {agree(hw_result, db_result)} ({db_result.num_rows:,} windows)")


if __name__ == "__main__":
    main()
