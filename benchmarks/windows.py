"""Windowed aggregation: the streaming engine against DuckDB batch and Apache Flink SQL.

Per-device 1-minute tumbling count/avg/max over N events from 10k devices (10k
events/s of event time, slightly out of order), fed to a pipeline in 100k-row
micro-batches; the same query then runs once in DuckDB over all the rows and, when
PyFlink is installed, as a Flink SQL streaming job (``benchmarks/flink_windows.py``,
parallelism 2, in a child process). Prints every rate, the ratios, and checks that the
results agree.

The inputs differ in one way, so the pipeline is also timed the way Flink reads:

- pipeline, DuckDB: the events are already Arrow columns in memory (as a pipeline
  gets them from the log, decoded at ingest);
- "pipeline from CSV": the same pipeline reading the CSV file Flink reads, with the
  parse (pyarrow's streaming CSV reader, 100k-row blocks) inside the timing;
- Flink: from job submission to the job's end, reading and parsing that CSV file
  (epoch-ms times, no header) and writing result CSV files; JVM start, a warm-up job
  and writing the input file are excluded, and the cost of the same job over an
  empty file (per-job start) is subtracted. See ``flink_windows.py`` for details.

    python benchmarks/windows.py                 # 10M events
    python benchmarks/windows.py --events 1000000 --batch 10000 --emit changes --filter
    python benchmarks/windows.py --no-flink      # skip Flink
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from headwater.engine import Pipeline

FLINK_SCRIPT = Path(__file__).resolve().parent / "flink_windows.py"
CSV_SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts_ms", pa.int64()),
        ("temperature", pa.float64()),
        ("status", pa.string()),
    ]
)

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
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp{extra}
FROM TUMBLE(readings, ts, INTERVAL '1 minute'){where}
GROUP BY device_id, window_start, window_end
WITH (watermark_delay = '5 seconds', emit = '{emit}')"""
BATCH_SQL = """SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS window_start,
       time_bucket(INTERVAL '1 minute', ts) + INTERVAL '1 minute' AS window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp{extra}
FROM readings{where} GROUP BY ALL"""
FILTER = "\nWHERE status <> 'error'"
QUANTILE = ",\n       approx_quantile(temperature, 0.99) AS p99_temp"


def make_events(n: int, devices: int, rate: int = 1, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"device-{i:05d}" for i in range(devices)], dtype=object)
    start = 1_767_225_600_000
    # each device sends `rate` events/s: 10k events/s for 10k devices by default
    ts = start + np.arange(n, dtype=np.int64) * 1_000 // (devices * rate)
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


def run_pipeline(events: pa.Table, batch: int, sql: str) -> tuple[float, pa.Table]:
    pipeline = Pipeline.from_sql(sql, SCHEMA)
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


def write_csv(events: pa.Table, path: Path) -> None:
    """The events as Flink reads them: epoch-ms times, no header."""
    table = pa.table(
        {
            "device_id": events["device_id"],
            "ts_ms": events["ts"].cast(pa.int64()),
            "temperature": events["temperature"],
            "status": events["status"],
        },
        schema=CSV_SCHEMA,
    )
    pacsv.write_csv(table, path, pacsv.WriteOptions(include_header=False))


def run_pipeline_csv(path: Path, rows: int, batch: int, sql: str) -> float:
    """The pipeline over the CSV file of ``rows`` events, parse included (~``batch`` per block)."""
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    block = max(1 << 16, path.stat().st_size * batch // max(rows, 1))
    read = pacsv.ReadOptions(column_names=CSV_SCHEMA.names, block_size=block)
    convert = pacsv.ConvertOptions(column_types=CSV_SCHEMA)
    started = time.perf_counter()
    with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for i, b in enumerate(reader):
            cols = [
                b.column(0),
                b.column(1).cast(SCHEMA.field("ts").type),
                b.column(2),
                b.column(3),
            ]
            pipeline.process(pa.Table.from_arrays(cols, schema=SCHEMA), now_ms=i)
    pipeline.finish(now_ms=1 << 40)
    return time.perf_counter() - started


@dataclass
class FlinkRun:
    seconds: float  # job minus the same job over an empty file
    raw_s: float
    empty_s: float
    source_s: float | None
    result: pa.Table


def flink_available(python: str) -> bool:
    probe = [python, "-c", "import pyflink"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def run_flink(csv_path: Path, where: str, python: str, parallelism: int) -> FlinkRun:
    out_dir = csv_path.parent / "flink-out"
    cmd = [python, str(FLINK_SCRIPT), "--input", str(csv_path), "--output", str(out_dir),
           "--parallelism", str(parallelism), "--source-job"]  # fmt: skip
    if where:
        cmd.append("--filter")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    if done.returncode or not lines:
        raise RuntimeError(f"the Flink job failed:\n{done.stderr[-3000:]}")
    t = json.loads(lines[-1])
    if "error" in t:
        raise RuntimeError(t["error"])
    con = duckdb.connect()
    result = con.sql(
        f"""SELECT device_id, timezone('UTC', window_start) AS window_start, n, avg_temp, max_temp
            FROM read_csv('{out_dir}/part-*', header = false, columns = {{'device_id': 'VARCHAR',
              'window_start': 'TIMESTAMP', 'window_end': 'TIMESTAMP', 'n': 'BIGINT',
              'avg_temp': 'DOUBLE', 'max_temp': 'DOUBLE'}})"""
    ).to_arrow_table()
    seconds = t["job_s"] - t["empty_job_s"]
    return FlinkRun(seconds, t["job_s"], t["empty_job_s"], t.get("source_s"), result)


def run_duckdb(events: pa.Table, sql: str) -> tuple[float, pa.Table]:
    con = duckdb.connect()
    con.register("readings", events)
    started = time.perf_counter()
    result = con.sql(sql).to_arrow_table()
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


def quantile_report(streamed: pa.Table, batch: pa.Table) -> str:
    """How the p99s compare with DuckDB's ``approx_quantile`` (itself a t-digest estimate)."""
    con = duckdb.connect()
    con.register("s", streamed)
    con.register("b", batch)
    above, worst, windows = con.sql(
        """SELECT count(*) FILTER (WHERE s.p99_temp > s.max_temp OR s.p99_temp IS NULL),
                  max(abs(s.p99_temp - b.p99_temp)), count(*)
           FROM (SELECT device_id, window_start, last(p99_temp ORDER BY n) AS p99_temp,
                        last(max_temp ORDER BY n) AS max_temp FROM s GROUP BY ALL) s
           JOIN b USING (device_id, window_start)"""
    ).fetchall()[0]
    return f"p99 above max (or NULL): {above} of {windows:,} windows; max |p99 - DuckDB's|: {worst:.4g}"


def agree_flink(flink: pa.Table, batch: pa.Table) -> bool:
    con = duckdb.connect()
    con.register("f", flink)
    con.register("b", batch)
    diff = con.sql(
        """SELECT count(*) FROM f FULL JOIN b USING (device_id, window_start)
           WHERE f.n IS DISTINCT FROM b.n OR abs(f.avg_temp - b.avg_temp) > 1e-9
              OR f.max_temp IS DISTINCT FROM b.max_temp"""
    ).fetchall()
    return diff[0][0] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=1, help="events/s per device")
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--emit", choices=["final", "changes"], default="final")
    parser.add_argument("--filter", action="store_true", help="add WHERE status <> 'error'")
    parser.add_argument("--quantile", action="store_true", help="add approx_quantile(temp, 0.99)")
    parser.add_argument("--no-flink", action="store_true", help="skip the Flink comparison")
    parser.add_argument("--flink-python", default=sys.executable, help="interpreter with pyflink")
    parser.add_argument("--flink-parallelism", type=int, default=2)
    args = parser.parse_args()
    where = FILTER if args.filter else ""
    events = make_events(args.events, args.devices, args.rate)
    print(f"{args.events:,} events, {args.devices:,} devices, {args.batch:,}-row batches")
    extra = QUANTILE if args.quantile else ""
    sql = PIPELINE.format(emit=args.emit, where=where, extra=extra)
    db_s, db_result = run_duckdb(events, BATCH_SQL.format(where=where, extra=extra))
    hw_s, hw_result = run_pipeline(events, args.batch, sql)
    db_rate, hw_rate = args.events / db_s, args.events / hw_s
    print(f"DuckDB batch      : {db_rate / 1e6:6.2f} M events/s ({db_s:.2f} s)")
    print(f"pipeline emit={args.emit:<7}: {hw_rate / 1e6:6.2f} M events/s ({hw_s:.2f} s)")
    print(f"ratio pipeline / DuckDB: {hw_rate / db_rate:.2f}")
    print(f"results agree: {agree(hw_result, db_result)} ({db_result.num_rows:,} windows)")
    if args.quantile:
        print(quantile_report(hw_result, db_result))
    if args.no_flink:
        return
    if not flink_available(args.flink_python):
        print("Flink: skipped, pyflink is not importable; pip install apache-flink (Java 11+)")
        return
    tmp = Path(tempfile.mkdtemp(prefix="hw-windows-"))
    try:
        csv_path = tmp / "events.csv"
        write_csv(events, csv_path)
        csv_s = run_pipeline_csv(csv_path, args.events, args.batch, sql)
        fl = run_flink(csv_path, where, args.flink_python, args.flink_parallelism)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    csv_rate, fl_rate = args.events / csv_s, args.events / fl.seconds
    print(
        f"pipeline from CSV : {csv_rate / 1e6:6.2f} M events/s ({csv_s:.2f} s, CSV parse included)"
    )
    print(f"Flink SQL p={args.flink_parallelism}    : {fl_rate / 1e6:6.2f} M events/s "
          f"({fl.seconds:.2f} s = job {fl.raw_s:.2f} s - empty job {fl.empty_s:.2f} s; "
          f"{args.events / fl.raw_s / 1e6:.2f} M/s with job start)")  # fmt: skip
    if fl.source_s is not None:
        print(f"  of which reading the CSV (a read-only job): {fl.source_s:.2f} s")
    print(f"ratio pipeline / Flink: {hw_rate / fl_rate:.1f}   "
          f"pipeline from CSV / Flink: {csv_rate / fl_rate:.1f}   "
          f"DuckDB / Flink: {db_rate / fl_rate:.1f}")  # fmt: skip
    print(f"Flink results agree: {agree_flink(fl.result, db_result)}")


if __name__ == "__main__":
    main()
