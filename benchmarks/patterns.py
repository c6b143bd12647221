"""Pattern matching throughput: DEFINE conditions vectorized in DuckDB vs per thread.

A random walk of prices over many keys, matched with a rising-run pattern
``A B{3,} C`` (WITHIN 10 minutes). The same condition is written twice: row-local
(``B.price > PREV(B.price)``, computed per batch by DuckDB) and, with an always-true
``AND COUNT(B.*) >= 1``, as a condition that reads the match so far (evaluated per
candidate thread in Python, with threads no longer merged by state). Prints rows/s
(process CPU time, best of a few rounds) and the number of matches, which must agree.

    python benchmarks/patterns.py                  # 100,000 rows, 100 keys
    python benchmarks/patterns.py --rows 500000 --keys 1000

Not part of the test run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa

from headwater.engine.patterns import PatternEngine, PatternSpec

SCHEMA = pa.schema([("sym", pa.string()), ("t", pa.int64()), ("price", pa.float64())])
MEASURES = (("start", "FIRST(A.t)"), ("rises", "COUNT(B.*)"), ("top", "MAX(B.price)"))


def data(rows: int, keys: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    sym = np.array([f"k{i}" for i in range(keys)])[rng.integers(0, keys, rows)]
    t = np.arange(rows, dtype=np.int64) * 10
    price = 100 + np.cumsum(rng.normal(0, 1, rows))
    return pa.table({"sym": sym, "t": t, "price": price}, schema=SCHEMA)


def spec(condition: str) -> PatternSpec:
    define = (("B", condition), ("C", "C.price < PREV(C.price)"))
    return PatternSpec("A B{3,} C", define, MEASURES, ("sym",), "t", within_ms=600_000)


def run(table: pa.Table, condition: str, batch: int, rounds: int) -> tuple[float, int]:
    best, matches = float("inf"), 0
    for _ in range(rounds):
        engine = PatternEngine(spec(condition), SCHEMA)
        start = time.process_time()
        found = sum(
            engine.push(table.slice(i, batch)).num_rows for i in range(0, table.num_rows, batch)
        )
        found += engine.finish().num_rows
        best = min(best, time.process_time() - start)
        matches = found
    return table.num_rows / best, matches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    table = data(args.rows, args.keys)
    print(f"{args.rows:,} rows, {args.keys} keys, batches of {args.batch:,}")
    for label, condition in (
        ("row-local, DuckDB per batch", "B.price > PREV(B.price)"),
        ("reads the match, per thread", "B.price > PREV(B.price) AND COUNT(B.*) >= 1"),
    ):
        rate, matches = run(table, condition, args.batch, args.rounds)
        print(f"  {label:32s} {rate:12,.0f} rows/s   {matches:,} matches")


if __name__ == "__main__":
    main()
