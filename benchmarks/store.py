"""Append throughput and query latency of the embedded store (DuckDBStore).

Appends stream-shaped Arrow batches (roughly time-ordered, as the materializer
writes them) through ``commit`` until the table holds ``--rows`` rows, then runs
time-range page reads with limit 1000 and prints p50/p99, then times upserts of
window results into a keyed table.

    python benchmarks/store.py                       # 10M rows, 200k-row batches
    python benchmarks/store.py --rows 2000000 --batch 100000 --threshold 64MB

Not part of the test run.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.store.duckdb import DuckDBStore
from headwater.store.ports import ResultWrite, RowQuery

TS = pa.timestamp("ms", tz="UTC")
T0 = 1_700_000_000_000
DEVICES = 10_000
SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", TS),
        ("temperature", pa.float64()),
        ("status", pa.string()),
        ("event_id", pa.string()),
        ("_offset", pa.int64()),
        ("_received_ms", pa.int64()),
        ("_schema_version", pa.int32()),
        ("_id_hash", pa.uint64()),
    ]
)


def template(n: int, rng: np.random.Generator) -> pa.Table:
    """One batch of ``n`` rows at offsets 0..n, ~1 row per ms with ±200 ms jitter."""
    offsets = np.arange(n, dtype=np.int64)
    ts = T0 + offsets + rng.integers(-200, 200, n)
    devices = pa.array([f"dev-{i:05d}" for i in range(DEVICES)])
    return pa.table(
        {
            "device_id": devices.take(pa.array(rng.integers(0, DEVICES, n))),
            "ts": pa.array(ts, TS),
            "temperature": rng.normal(20, 5, n),
            "status": pa.array(["ok", "warn", "error"]).take(pa.array(rng.integers(0, 3, n))),
            "event_id": pa.array(rng.integers(0, 2**62, n).astype(str)),
            "_offset": offsets,
            "_received_ms": ts + 5,
            "_schema_version": pa.array(np.ones(n, dtype=np.int32)),
            "_id_hash": pa.array(rng.integers(0, 2**63, n, dtype=np.uint64)),
        },
        schema=SCHEMA,
    )


def shifted(batch: pa.Table, by: int) -> pa.Table:
    """``batch`` moved ``by`` offsets (and ms) later: fresh values without regenerating strings."""
    ts = pc.add(batch["ts"].cast(pa.int64()), by).cast(TS)
    batch = batch.set_column(SCHEMA.get_field_index("ts"), "ts", ts)
    return batch.set_column(
        SCHEMA.get_field_index("_offset"), "_offset", pc.add(batch["_offset"], by)
    )


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000
    return f"p50 {np.percentile(ms, 50):7.1f} ms  p99 {np.percentile(ms, 99):7.1f} ms  max {ms.max():7.1f} ms"


def bench_appends(store: DuckDBStore, rows: int, batch: int) -> None:
    rng = np.random.default_rng(7)
    pool = [shifted(template(batch, rng), i * batch) for i in range(4)]
    store.ensure_table("bench", "readings", SCHEMA)
    latencies: list[float] = []
    started = time.perf_counter()
    for i in range(rows // batch):
        rows_i = shifted(pool[i % len(pool)], (i // len(pool)) * len(pool) * batch)
        t = time.perf_counter()
        write = ResultWrite(
            "bench", {"bench.readings": (i + 1) * batch}, appends={"readings": rows_i}
        )
        store.commit("bench", write)
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    print(
        f"append {batch:>7,}-row batches: {rows / elapsed:>12,.0f} rows/s "
        f"({rows / sum(latencies):,.0f} inside commit)   commit {percentiles(latencies)}"
    )


def bench_queries(store: DuckDBStore, rows: int, repeat: int) -> None:
    rng = np.random.default_rng(11)
    span = rows  # ~1 row per ms

    def window(width_ms: int) -> tuple[int, int]:
        start = T0 + int(rng.integers(0, max(1, span - width_ms)))
        return start, start + width_ms

    def page_after_first(width: int, order: str) -> Callable[[], object]:
        def run() -> object:
            lo, hi = window(width)
            q = RowQuery("bench", "readings", "ts", lo, hi, order=order, limit=1000)  # type: ignore[arg-type]
            first = store.read_rows(q)
            t = time.perf_counter()
            store.read_rows(
                RowQuery(
                    "bench",
                    "readings",
                    "ts",
                    lo,
                    hi,
                    order=order,
                    limit=1000,
                    cursor=first.next_cursor,
                )
            )  # type: ignore[arg-type]
            return time.perf_counter() - t

        return run

    def plain(width: int, order: str, **filters: str) -> Callable[[], object]:
        def run() -> object:
            lo, hi = window(width)
            t = time.perf_counter()
            store.read_rows(RowQuery("bench", "readings", "ts", lo, hi, filters, order, 1000))  # type: ignore[arg-type]
            return time.perf_counter() - t

        return run

    cases = {
        "1-minute range, asc, limit 1000": plain(60_000, "asc"),
        "1-hour range, asc, limit 1000": plain(3_600_000, "asc"),
        "1-hour range, desc, limit 1000": plain(3_600_000, "desc"),
        "whole table, desc, limit 1000": plain(span, "desc"),
        "1-hour range, second page (cursor)": page_after_first(3_600_000, "asc"),
        "1-hour range, device filter": plain(3_600_000, "asc", device_id="dev-00042"),
    }
    for name, run in cases.items():
        samples = [float(run()) for _ in range(repeat)]  # type: ignore[arg-type]
        print(f"query {name:<36} {percentiles(samples[3:])}")


def bench_upserts(store: DuckDBStore, keys: int, rounds: int) -> None:
    key = ["device_id", "window_start"]
    store.ensure_table(
        "bench",
        "minute",
        pa.schema([("device_id", pa.string()), ("window_start", TS), ("n", pa.int64())]),
        key=key,
    )
    devices = pa.array([f"dev-{i:05d}" for i in range(keys)])
    latencies: list[float] = []
    for r in range(rounds):
        # Each round closes one new minute and revises the previous one (emit = changes).
        for minute in (r, r + 1):
            batch = pa.table(
                {
                    "device_id": devices,
                    "window_start": pa.array([minute * 60_000] * keys, TS),
                    "n": pa.array(np.full(keys, r)),
                }
            )
            t = time.perf_counter()
            store.commit(
                "bench",
                ResultWrite("pipeline", {"bench.readings": r}, upserts={"minute": (batch, key)}),
            )
            latencies.append(time.perf_counter() - t)
    total = keys * 2 * rounds
    print(
        f"upsert {keys:>7,}-row batches: {total / sum(latencies):>12,.0f} rows/s   commit {percentiles(latencies)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--batch", type=int, default=200_000)
    parser.add_argument("--threshold", default="16MB", help="DuckDB checkpoint_threshold")
    parser.add_argument("--repeat", type=int, default=103)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hw-store-", dir=args.dir))
    try:
        store = DuckDBStore(
            root / "store",
            memory_limit="4GB",
            tenant_memory_limit="4GB",  # the one tenant gets it all
            threads=2,
            checkpoint_threshold=args.threshold,
        )
        print(f"DuckDBStore at {root}, checkpoint_threshold={args.threshold}")
        bench_appends(store, args.rows, args.batch)
        bench_queries(store, args.rows, args.repeat)
        bench_upserts(store, 10_000, 20)
        store.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
