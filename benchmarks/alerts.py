"""Alert rule evaluation: N rules over one result table of K keys, evaluations per second.

Each rule's evaluation reads the latest row of every key of its table and decides its
condition per key in DuckDB (``headwater.alerts.evaluate``). Rules over the same table
share the read within one evaluation pass; this compares that with each rule reading
the table on its own (how rules were evaluated before), and shows where the time goes.

    python benchmarks/alerts.py                    # 1, 10, 50 rules over 10k keys
    python benchmarks/alerts.py --keys 10000 --rules 1 10 50 100
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from headwater.alerts.condition import latest_per_key
from headwater.alerts.delivery import RetryPolicy
from headwater.alerts.evaluate import read_latest
from headwater.alerts.service import Alerts
from headwater.catalog.sqlite import Catalog
from headwater.model.time import ManualClock
from headwater.store.duckdb import DuckDBStore
from headwater.store.ports import TIMESTAMP, ResultWrite

T0 = 1_767_225_600_000
SCHEMA = pa.schema([("window_start", TIMESTAMP), ("device_id", pa.string()),
                    ("avg_temp", pa.float64())])  # fmt: skip
HOOK = [{"kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": "whsec_AAAA"}]


def results(keys: int, minute: int, seed: int) -> pa.Table:
    """Each device near its own level (most keep their state from one minute to the next)."""
    level = np.random.default_rng(0).normal(30.0, 6.0, keys)
    noise = np.random.default_rng(seed).normal(0.0, 0.5, keys)
    return pa.table({
        "window_start": pa.array(np.full(keys, T0 + minute * 60_000), TIMESTAMP),
        "device_id": [f"device-{i:05d}" for i in range(keys)],
        "avg_temp": level + noise,
    }, schema=SCHEMA)  # fmt: skip


def bench(keys: int, rules: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        catalog = Catalog(Path(d) / "catalog.sqlite")
        store = DuckDBStore(Path(d) / "store.duckdb", memory_limit="1GB", threads=2)
        store.ensure_table("default", "device_minute", SCHEMA, key=["device_id"])
        clock = ManualClock(T0)
        a = Alerts(catalog, store, clock, RetryPolicy())
        for i in range(rules):
            a.create("default", {"name": f"r{i}", "from": "device_minute", "key": "device_id",
                                 "condition": f"avg_temp > {35 + i % 10}", "channels": HOOK},
                     {"device_minute"})  # fmt: skip
        write = ResultWrite(
            "p", {}, upserts={"device_minute": (results(keys, 0, 1), ["device_id"])}
        )
        store.commit("default", write)
        a.evaluate()  # compile, first states
        shared = separate = read_s = decide_s = 0.0
        for r in range(rounds):
            rows = results(keys, r + 1, r + 2)
            store.commit(
                "default", ResultWrite("p", {}, upserts={"device_minute": (rows, ["device_id"])})
            )
            clock.advance(1000)
            t0 = time.perf_counter()
            a.evaluate()
            shared += time.perf_counter() - t0
            runs = a.in_tenant("default")
            t0 = time.perf_counter()
            for run in runs:  # each rule on its own: one read each, state machine excluded
                read_latest(run, store)
            separate += time.perf_counter() - t0
            cond = runs[0].condition
            assert cond is not None
            t0 = time.perf_counter()
            table = store.latest_per_key("default", "device_minute", ["device_id"], cond.order, 1)
            read_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            latest_per_key(cond, table)
            decide_s += time.perf_counter() - t0
        evals = rules * rounds
        print(
            f"{rules:>4} rules x {keys:,} keys: evaluate() {evals / shared:8.1f} rule evaluations/s "
            f"({1000 * shared / rounds:7.1f} ms per pass, reads shared); reads only, one per "
            f"rule: {1000 * separate / rounds:7.1f} ms per pass; one read "
            f"{1000 * read_s / rounds:.1f} ms, one condition {1000 * decide_s / rounds:.1f} ms"
        )
        store.close()
        catalog.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rules", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    for n in args.rules:
        bench(args.keys, n, args.rounds)


if __name__ == "__main__":
    main()
