"""Anomaly functions: scoring speed over many keys, and detection quality on labelled series.

Speed: N events over K keys (in time order, 100k-row micro-batches) through a pipeline
computing ``zscore`` and ``ewma_zscore`` per key, against DuckDB computing a running
mean/deviation per key with window functions over the same rows (a batch baseline).

Quality: generated series with labelled anomalies, one family at a time —
spikes, level shifts (the first points after the shift are the anomalies), slow drift
with spikes on top, and a daily cycle with spikes that are only unusual for their hour —
scored by ``is_anomaly`` with each method at 3 deviations. Prints precision, recall and
F1 per family and method. Then change detection: one level shift or drift per series,
found when an alarm falls in the change's window; zscore and ewma against ``cusum``.

    python benchmarks/anomaly.py                     # 10M events, 10k keys
    python benchmarks/anomaly.py --events 2000000 --keys 10000
"""

from __future__ import annotations

import argparse
import time

import duckdb
import numpy as np
import pyarrow as pa

from headwater.engine import Pipeline

SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")), ("v", pa.float64())])
W = "OVER (PARTITION BY k ORDER BY ts)"


def events(n: int, keys: int, seed: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array([f"device-{i:05d}" for i in range(keys)])
    k = names[rng.integers(0, keys, n)]
    ts = np.arange(n, dtype=np.int64) * 1_000 // max(1, keys // 10)  # ~10k events/s of event time
    v = rng.normal(20.0, 2.0, n)
    return pa.table({"k": k, "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")), "v": v})


def speed(n: int, keys: int, batch: int) -> None:
    table = events(n, keys)
    sql = f"CREATE PIPELINE a AS SELECT k, ts, zscore(v) {W} AS z, ewma_zscore(v, 0.1) {W} AS ez FROM s"
    p = Pipeline.from_sql(sql, SCHEMA)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        p.process(table.slice(start, batch), 0)
    took = time.perf_counter() - t0
    print(
        f"pipeline zscore + ewma_zscore: {n:,} events, {keys:,} keys, {batch:,}-row batches: "
        f"{n / took / 1e6:.2f}M events/s ({took:.2f} s)"
    )
    p = Pipeline.from_sql(f"CREATE PIPELINE c AS SELECT k, ts, cusum(v) {W} AS c FROM s", SCHEMA)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        p.process(table.slice(start, batch), 0)
    cusum_took = time.perf_counter() - t0
    print(f"pipeline cusum: {n / cusum_took / 1e6:.2f}M events/s ({cusum_took:.2f} s)")
    con = duckdb.connect()
    con.register("t", table)
    t0 = time.perf_counter()
    con.sql(
        "SELECT k, ts, (v - avg(v) OVER w) / stddev_samp(v) OVER w AS z FROM t "
        "WINDOW w AS (PARTITION BY k ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)"
    ).to_arrow_table()
    batch_took = time.perf_counter() - t0
    print(
        f"DuckDB batch running z-score (window functions): {n / batch_took / 1e6:.2f}M events/s "
        f"({batch_took:.2f} s); pipeline / DuckDB = {batch_took / took:.2f}x"
    )


def family(
    name: str, rng: np.random.Generator, keys: int, length: int
) -> tuple[pa.Table, np.ndarray]:
    """Rows (k, ts, v) in time order and the label of each row."""
    ks, ts, vs, labels = [], [], [], []
    hour_ms = 3_600_000
    for key in range(keys):
        t = np.arange(length, dtype=np.int64) * (hour_ms // 4)  # every 15 minutes
        noise = rng.normal(0.0, 1.0, length)
        label = np.zeros(length, dtype=bool)
        base = np.full(length, 50.0)
        if name == "level_shift":
            at = rng.integers(length // 3, 2 * length // 3)
            base[at:] += rng.choice([-8.0, 8.0])
            label[at : at + 3] = True
        elif name == "drift":
            base += np.linspace(0, 6, length)
        elif name == "seasonal":
            hours = (t // hour_ms) % 24
            base += 10.0 * np.sin(2 * np.pi * hours / 24)
        if name in ("spikes", "drift", "seasonal"):
            at = rng.choice(
                np.arange(length // 5, length), size=max(1, length // 100), replace=False
            )
            size = (
                3.0 if name == "seasonal" else 7.0
            )  # seasonal: small for the day, big for the hour
            noise[at] += rng.choice([-size, size], size=len(at)) * (
                1.0 if name != "seasonal" else 2.5
            )
            label[at] = True
        ks += [f"s{key}"] * length
        ts.append(t)
        vs.append(base + noise)
        labels.append(label)
    order = np.argsort(np.concatenate(ts), kind="stable")
    table = pa.table({"k": np.array(ks)[order], "ts": pa.array(np.concatenate(ts)[order], pa.timestamp("ms", tz="UTC")),
                      "v": np.concatenate(vs)[order]})  # fmt: skip
    return table, np.concatenate(labels)[order]


METHODS = {
    "zscore": "is_anomaly(v, 3)",
    "ewma (alpha 0.1)": "is_anomaly(v, 3, 'ewma', 0.1)",
    "seasonal (hour of day)": "abs(coalesce(seasonal_zscore(v, 'hour_of_day', 5), 0)) > 3",
}


def quality(keys: int, length: int) -> None:
    print(f"\ndetection, {keys} series x {length} points per family, threshold 3 deviations")
    print(f"{'family':<13} {'method':<24} {'precision':>9} {'recall':>7} {'F1':>5}")
    rng = np.random.default_rng(7)
    for name in ("spikes", "level_shift", "drift", "seasonal"):
        table, label = family(name, rng, keys, length)
        for method, expr in METHODS.items():
            expr = (
                expr.replace("is_anomaly(v", "is_anomaly(v").replace(")", f") {W}", 1)
                if "seasonal" not in method
                else f"abs(coalesce(seasonal_zscore(v, 'hour_of_day', 5) {W}, 0)) > 3"
            )
            p = Pipeline.from_sql(f"CREATE PIPELINE q AS SELECT {expr} AS flag FROM s", SCHEMA)
            flags = np.zeros(table.num_rows, dtype=bool)
            for start in range(0, table.num_rows, 10_000):
                out = p.process(table.slice(start, 10_000), 0).appends
                flags[start : start + out.num_rows] = out["flag"].to_numpy(zero_copy_only=False)
            tp = int((flags & label).sum())
            precision = tp / max(1, int(flags.sum()))
            recall = tp / max(1, int(label.sum()))
            f1 = 2 * precision * recall / max(1e-9, precision + recall)
            print(f"{name:<13} {method:<24} {precision:>9.2f} {recall:>7.2f} {f1:>5.2f}")


CHANGE_METHODS = {
    "zscore": "is_anomaly(v, 3)",
    "ewma (alpha 0.1)": "is_anomaly(v, 3, 'ewma', 0.1)",
    "cusum (threshold 6)": "is_anomaly(v, 6, 'cusum')",
}


def changes(
    kind: str, rng: np.random.Generator, keys: int, length: int
) -> tuple[pa.Table, np.ndarray]:
    """One change per series at a random point — a level shift of 4 deviations, or a
    drift reaching 4 deviations over 200 points — and the window in which an alarm finds
    it (10 points after a shift, 250 after a drift starts)."""
    ks, ts, vs, windows = [], [], [], []
    for key in range(keys):
        at = int(rng.integers(length // 3, 2 * length // 3))
        x = rng.normal(50.0, 1.0, length)
        sign = rng.choice([-1.0, 1.0])
        x[at:] += sign * (
            4.0 if kind == "level_shift" else np.minimum(np.arange(length - at) / 50, 4.0)
        )
        window = np.zeros(length, dtype=bool)
        window[at : at + (10 if kind == "level_shift" else 250)] = True
        ks += [f"s{key}"] * length
        ts.append(np.arange(length, dtype=np.int64) * 60_000)
        vs.append(x)
        windows.append(window)
    order = np.argsort(np.concatenate(ts), kind="stable")
    table = pa.table({"k": np.array(ks)[order], "ts": pa.array(np.concatenate(ts)[order], pa.timestamp("ms", tz="UTC")),
                      "v": np.concatenate(vs)[order]})  # fmt: skip
    return table, np.concatenate(windows)[order]


def change_quality(keys: int, length: int) -> None:
    """Changes found (an alarm in the change's window) and the precision of the alarms
    (the share inside a window): a detector that flags the whole new level is imprecise."""
    print(f"\nchange detection, {keys} series x {length} points, one change per series")
    print(f"{'family':<13} {'method':<24} {'precision':>9} {'found':>6} {'alarms':>7}")
    rng = np.random.default_rng(11)
    for kind in ("level_shift", "drift"):
        table, window = changes(kind, rng, keys, length)
        series = np.asarray(table["k"].to_numpy(zero_copy_only=False))
        for method, expr in CHANGE_METHODS.items():
            p = Pipeline.from_sql(f"CREATE PIPELINE q AS SELECT {expr} {W} AS flag FROM s", SCHEMA)
            flags = np.zeros(table.num_rows, dtype=bool)
            for start in range(0, table.num_rows, 10_000):
                out = p.process(table.slice(start, 10_000), 0).appends
                flags[start : start + out.num_rows] = out["flag"].to_numpy(zero_copy_only=False)
            hits = flags & window
            found = len(np.unique(series[hits])) / keys
            precision = hits.sum() / max(1, flags.sum())
            print(f"{kind:<13} {method:<24} {precision:>9.2f} {found:>6.2f} {int(flags.sum()):>7}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--length", type=int, default=2_000)
    args = ap.parse_args()
    speed(args.events, args.keys, args.batch)
    quality(args.series, args.length)
    change_quality(args.series, args.length)


if __name__ == "__main__":
    main()
