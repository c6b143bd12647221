"""Anomaly functions: every score equals a plain per-key reference, however the rows are
batched, and across a snapshot and restore."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine import Pipeline
from headwater.errors import UnsupportedSQL

SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")), ("v", pa.float64())])
W = "OVER (PARTITION BY k ORDER BY ts)"
SQL = f"""CREATE PIPELINE a AS SELECT k, ts, v,
  zscore(v, 3) {W} AS z, ewma(v, 0.3) {W} AS e, ewma_zscore(v, 0.3, 3) {W} AS ez,
  anomaly_score(v) {W} AS s, is_anomaly(v, 2.5) {W} AS flag,
  seasonal_zscore(v, 'hour_of_day', 2) {W} AS sz
FROM s"""


def reference(rows: list[tuple[str, int, float | None]]) -> list[dict]:
    """One key at a time, one row at a time, in event-time order (arrival order on ties)."""
    out: list[dict] = [{} for _ in rows]
    hist: dict[str, list[float]] = {}
    seasonal: dict[tuple[str, int], list[float]] = {}
    ewm: dict[str, tuple[float, float, int]] = {}
    default_hist: dict[str, list[float]] = {}
    order = sorted(range(len(rows)), key=lambda i: (rows[i][0], rows[i][1], i))
    for i in order:
        k, ts, v = rows[i]
        if v is None:
            out[i] = {"z": None, "e": None, "ez": None, "s": None, "flag": False, "sz": None}
            continue
        out[i]["z"] = _z(hist.setdefault(k, []), v, 3)
        zd = _z(default_hist.setdefault(k, []), v, 10)
        out[i]["s"] = None if zd is None else math.erf(abs(zd) / math.sqrt(2))
        out[i]["flag"] = zd is not None and abs(_z(default_hist[k], v, 10) or 0) > 2.5
        hour = (ts // 3_600_000) % 24
        out[i]["sz"] = _z(seasonal.setdefault((k, hour), []), v, 2)
        mean, var, n = ewm.get(k, (v, 0.0, 0))
        dev = v - mean
        std = max(math.sqrt(var), 1e-9 * max(1.0, abs(mean)))
        out[i]["ez"] = dev / std if n >= 3 else None
        mean, var = 0.7 * mean + 0.3 * v, 0.7 * (var + 0.3 * dev * dev)
        out[i]["e"] = mean
        ewm[k] = (mean, var, n + 1)
        hist[k].append(v)
        default_hist[k].append(v)
        seasonal[(k, hour)].append(v)
    return out


def _z(seen: list[float], v: float, warmup: int) -> float | None:
    if len(seen) < max(warmup, 2):
        return None
    mean = sum(seen) / len(seen)
    var = sum((x - mean) ** 2 for x in seen) / (len(seen) - 1)
    return (v - mean) / max(math.sqrt(var), 1e-9 * max(1.0, abs(mean)))


def run(
    rows: list[tuple[str, int, float | None]], cuts: list[int], restore_at: int | None
) -> list[dict]:
    p = Pipeline.from_sql(SQL, SCHEMA)
    out: list[dict] = []
    bounds = [0, *sorted(set(cuts)), len(rows)]
    for n, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        if n == restore_at:  # a restart: a new pipeline from the snapshot
            snap = p.snapshot()
            p = Pipeline.from_sql(SQL, SCHEMA)
            p.restore(snap)
        part = rows[lo:hi]
        if not part:
            continue
        table = pa.table(
            {
                "k": [r[0] for r in part],
                "ts": pa.array([r[1] for r in part], pa.timestamp("ms", tz="UTC")),
                "v": pa.array([r[2] for r in part], pa.float64()),
            }
        )
        got = p.process(table, 0).appends
        assert got is not None and got.num_rows == len(part)
        out += got.to_pylist()
    return out


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


ROWS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 3 * 3_600_000),
        st.one_of(
            st.none(), st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from([5.0, 5.0, 5.0])
        ),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=examples(60), deadline=None)
@given(
    rows=ROWS, cuts=st.lists(st.integers(0, 60), max_size=4), restore=st.none() | st.integers(0, 4)
)
def test_scores_match_a_per_key_reference_whatever_the_batches(
    rows: list[tuple[str, int, float | None]], cuts: list[int], restore: int | None
) -> None:
    # Within a batch rows are scored in event-time order; across batches in arrival
    # order. The reference sees one batch, so give it rows in (batch, time) order.
    bounds = [0, *sorted({c for c in cuts if c < len(rows)}), len(rows)]
    ordered = [r for lo, hi in itertools.pairwise(bounds)
               for r in sorted(rows[lo:hi], key=lambda r: (r[0], r[1]))]  # fmt: skip
    got = run(ordered, bounds[1:-1], restore)
    ref = reference_in_batches(ordered, bounds)
    for g, r in zip(got, ref, strict=True):
        for col in ("z", "e", "ez", "s", "sz"):
            assert close(g[col], r[col]), (col, g, r)
        assert g["flag"] == r["flag"]


def reference_in_batches(rows: list, bounds: list[int]) -> list[dict]:
    """The reference with batch boundaries: a key's rows are taken batch by batch."""
    tagged = [
        (r[0], (b, r[1]), r[2])
        for b, (lo, hi) in enumerate(itertools.pairwise(bounds))
        for r in rows[lo:hi]
    ]
    flat = [(k, b * 10**12 + t, v) for k, (b, t), v in tagged]
    out = reference([(k, t, v) for k, t, v in flat])
    # seasonal buckets follow the real event time, not the tagged one
    real = reference_seasonal(rows, bounds)
    for o, sz in zip(out, real, strict=True):
        o["sz"] = sz
    return out


def reference_seasonal(rows: list, bounds: list[int]) -> list[float | None]:
    out: list[float | None] = []
    seen: dict[tuple[str, int], list[float]] = {}
    for lo, hi in itertools.pairwise(bounds):
        part = rows[lo:hi]
        scores: dict[int, float | None] = {}
        for i in sorted(range(len(part)), key=lambda i: (part[i][0], part[i][1], i)):
            k, ts, v = part[i]
            if v is None:
                scores[i] = None
                continue
            bucket = seen.setdefault((k, (ts // 3_600_000) % 24), [])
            scores[i] = _z(bucket, v, 2)
            bucket.append(v)
        out += [scores[i] for i in range(len(part))]
    return out


def test_a_spike_after_a_flat_history_is_flagged() -> None:
    rows = [("d", i * 1000, 20.0) for i in range(30)] + [("d", 31_000, 25.0)]
    out = run(rows, [], None)
    assert [r["flag"] for r in out] == [False] * 30 + [True]
    assert out[-1]["s"] > 0.999 and out[-2]["z"] == 0.0


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        (
            f"SELECT zscore(v) {W}, zscore(v) OVER (PARTITION BY ts ORDER BY ts) FROM s",
            "different windows",
        ),
        (
            "SELECT zscore(v) OVER (PARTITION BY k ORDER BY ts ROWS 10 PRECEDING) FROM s",
            "window frame",
        ),
        ("SELECT zscore(v) OVER (PARTITION BY k) FROM s", "ORDER BY"),
        (f"SELECT ewma(v) {W} FROM s", "ewma with 1 arguments"),
        (f"SELECT ewma(v, 2) {W} FROM s", "alpha"),
        (f"SELECT seasonal_zscore(v, 'weekly') {W} FROM s", "season"),
        (f"SELECT k FROM s WHERE is_anomaly(v) {W}", "QUALIFY"),
        (f"SELECT k, zscore(v) {W} FROM s GROUP BY k", "GROUP BY"),
    ],
)
def test_what_cannot_run_is_refused_with_the_construct(sql: str, words: str) -> None:
    with pytest.raises(UnsupportedSQL, match=words):
        Pipeline.from_sql(f"CREATE PIPELINE x AS {sql}", SCHEMA)


def test_state_is_per_key_and_bounded_by_the_keys() -> None:
    p = Pipeline.from_sql(SQL, SCHEMA)
    n = 5_000
    keys = [f"k{i % 100}" for i in range(n)]
    t = pa.table(
        {
            "k": keys,
            "ts": pa.array(np.arange(n), pa.timestamp("ms", tz="UTC")),
            "v": np.random.default_rng(0).normal(size=n),
        }
    )
    p.process(t, 0)
    p.process(t, 0)
    # one history per key and statistic (running, weighted, hour of day): warm-ups and
    # thresholds share them
    assert p.status()["state_rows"] == 3 * 100


@pytest.mark.parametrize(
    "select",
    [
        f"k, zscore(v, 1) {W} + CAST(tag AS INTEGER) AS bad",
        "k, avg(v) OVER (PARTITION BY k ORDER BY ts ROWS 3 PRECEDING) + CAST(tag AS INTEGER) AS x",
    ],
)
def test_error_rows_of_a_later_stage_have_only_the_streams_columns(select: str) -> None:
    # the scoring stage's (and OVER stage's) internal columns never reach the error table
    schema = SCHEMA.append(pa.field("tag", pa.string()))
    p = Pipeline.from_sql(f"CREATE PIPELINE e AS SELECT {select} FROM s", schema)
    batch = pa.table(
        {
            "k": ["a", "a", "a"],
            "ts": pa.array([1_000, 2_000, 3_000], pa.timestamp("ms", tz="UTC")),
            "v": [1.0, 2.0, 3.0],
            "tag": ["1", "2", "x"],
        }
    )
    out = p.process(batch, 0).then(p.finish(0))
    assert out.errors is not None and out.errors["k"].to_pylist() == ["a"]
    assert out.errors.schema.names == p.error_schema.names
