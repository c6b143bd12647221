"""The CUSUM change detector: equal to a plain per-row reference however the rows are
batched and across a restore, and finding level shifts and drifts in labelled series
where a whole-history z-score does not."""

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
SQL = f"""CREATE PIPELINE c AS SELECT k, ts, v, cusum(v, 0.5, 4, 5) {W} AS c,
  is_anomaly(v, 4, 'cusum') {W} AS flag, anomaly_score(v, 'cusum') {W} AS s FROM s"""


def reference(values: list[float | None], slack: float, h: float, warmup: int) -> list:
    """One row at a time: the statistic (None while the reference is learned)."""
    n, mean, m2, hi, lo = 0, 0.0, 0.0, 0.0, 0.0
    out: list[float | None] = []
    for x in values:
        if x is None:
            out.append(None)
            continue
        if n < max(warmup, 2):
            out.append(None)
        else:
            std = max(math.sqrt(m2 / (n - 1)), 1e-9 * max(1.0, abs(mean)))
            u = (x - mean) / std
            hi, lo = max(0.0, hi + u - slack), max(0.0, lo - u - slack)
            out.append(max(hi, lo))
            if max(hi, lo) > h:  # an alarm: the detector restarts after this row
                n, mean, m2, hi, lo = 0, 0.0, 0.0, 0.0, 0.0
                continue
        n += 1
        d = x - mean
        mean += d / n
        m2 += d * (x - mean)
    return out


def table(rows: list[tuple[str, int, float | None]]) -> pa.Table:
    return pa.table(
        {
            "k": [r[0] for r in rows],
            "ts": pa.array([r[1] for r in rows], pa.timestamp("ms", tz="UTC")),
            "v": pa.array([r[2] for r in rows], pa.float64()),
        }
    )


def run(sql: str, rows: list, cuts: list[int], restore_at: int | None) -> list[dict]:
    p = Pipeline.from_sql(sql, SCHEMA)
    out: list[dict] = []
    for n, (lo, hi) in enumerate(itertools.pairwise([0, *cuts, len(rows)])):
        if n == restore_at:
            snap = p.snapshot()
            p = Pipeline.from_sql(sql, SCHEMA)
            p.restore(snap)
        if hi > lo:
            got = p.process(table(rows[lo:hi]), 0).appends
            assert got is not None
            out += got.to_pylist()
    return out


@st.composite
def series(draw: st.DrawFn) -> list[tuple[str, int, float | None]]:
    n = draw(st.integers(1, 200))
    keys = draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n))
    shift = draw(st.floats(0, 20))
    at = draw(st.integers(0, n))
    noise = np.random.default_rng(draw(st.integers(0, 2**16))).normal(0, 1, n)
    nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return [(k, i * 1000, None if null and i % 7 == 0 else float(x + (shift if i >= at else 0)))
            for i, (k, x, null) in enumerate(zip(keys, noise, nulls, strict=True))]  # fmt: skip


@settings(max_examples=examples(60), deadline=None)
@given(rows=series(), cuts=st.lists(st.integers(1, 149), max_size=4),
       restore=st.none() | st.integers(0, 4))  # fmt: skip
def test_cusum_equals_a_per_row_reference_whatever_the_batches(
    rows: list[tuple[str, int, float | None]], cuts: list[int], restore: int | None
) -> None:
    got = run(SQL, rows, sorted({c for c in cuts if c < len(rows)}), restore)
    for key in "abc":
        mine = [g for g in got if g["k"] == key]
        values = [r[2] for r in rows if r[0] == key]
        want = reference(values, 0.5, 4.0, 5)
        flags = reference(values, 1.0, 4.0, 30)  # is_anomaly: slack 1, warm-up 30 by default
        scores = reference(values, 1.0, 6.0, 30)  # anomaly_score: threshold 6 too
        for g, w, f, s in zip(mine, want, flags, scores, strict=True):
            assert (g["c"] is None) == (w is None), (g, w)
            if w is not None:
                assert g["c"] == pytest.approx(w, rel=1e-6, abs=1e-6)
            assert g["flag"] == (f is not None and f > 4.0)
            assert (g["s"] is None) == (s is None)
            if s is not None:
                assert g["s"] == pytest.approx(min(s / 6.0, 1.0), rel=1e-6, abs=1e-6)


def labelled(kind: str, keys: int, length: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Series with one change each (a level shift of 4 deviations, or a drift of 4
    deviations over 200 points) at a random point, and the window where finding it
    counts: 10 points after a shift, 250 after the start of a drift."""
    rng = np.random.default_rng(seed)
    rows, windows = [], np.zeros(keys * length, dtype=bool)
    for key in range(keys):
        at = int(rng.integers(length // 3, 2 * length // 3))
        x = rng.normal(50.0, 1.0, length)
        if kind == "shift":
            x[at:] += rng.choice([-4.0, 4.0])
        else:
            x[at:] += rng.choice([-1.0, 1.0]) * np.minimum(np.arange(length - at) / 50, 4.0)
        rows += [(f"s{key}", i * 1000, float(v)) for i, v in enumerate(x)]
        span = 10 if kind == "shift" else 250
        windows[key * length + at : key * length + at + span] = True
    return table(rows), windows


@pytest.mark.parametrize("kind", ["shift", "drift"])
def test_level_shifts_and_drifts_are_found_once_near_the_change(kind: str) -> None:
    keys, length = 40, 600
    rows, window = labelled(kind, keys, length, seed=3)
    found: dict[str, tuple[float, float]] = {}
    for method, flag in [("cusum", "is_anomaly(v, 6, 'cusum')"), ("zscore", "is_anomaly(v, 3)")]:
        p = Pipeline.from_sql(f"CREATE PIPELINE q AS SELECT k, {flag} {W} AS f FROM s", SCHEMA)
        flags = np.zeros(rows.num_rows, dtype=bool)
        for lo in range(0, rows.num_rows, 5_000):  # key after key: one busy key per batch
            out = p.process(rows.slice(lo, 5_000), 0).appends
            flags[lo : lo + out.num_rows] = out["f"].to_numpy(zero_copy_only=False)
        per_key_hit = (flags & window).reshape(keys, length).any(axis=1)
        precision = (flags & window).sum() / max(1, flags.sum())
        found[method] = (per_key_hit.mean(), precision)
    recall, precision = found["cusum"]
    assert recall >= 0.95 and precision >= 0.9, found
    if kind == "shift":
        assert found["zscore"][1] < 0.5, found  # it keeps flagging the new level


@pytest.mark.parametrize(
    ("sql", "words"),
    [
        (f"SELECT cusum(v, -1) {W} FROM s", "slack"),
        (f"SELECT cusum(v, 0.5, 0) {W} FROM s", "threshold"),
        (f"SELECT anomaly_score(v, 'page_hinkley') {W} FROM s", "method"),
        (f"SELECT cusum(v, 0.5, 5, 10, 1) {W} FROM s", "cusum with 5 arguments"),
    ],
)
def test_bad_cusum_calls_are_refused_naming_the_argument(sql: str, words: str) -> None:
    with pytest.raises(UnsupportedSQL, match=words):
        Pipeline.from_sql(f"CREATE PIPELINE x AS {sql}", SCHEMA)
