"""Oracle tests: the streaming result over random micro-batches equals one batch query.

A random stream (keys with NULLs, timestamps, values with NULLs) is cut into random
micro-batches and delivered out of order. An independent reference, written here in
plain Python, decides which (row, window) pairs are late under the documented rule;
DuckDB aggregates the pairs that are not, in one batch query, and the pipeline's
output must match it (floats within 1e-6, sketches within their documented error).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine import Pipeline, StepOutput
from headwater.engine.aggregates.quantiles import EXACT_LIMIT, RANK_ERROR

SCHEMA = pa.schema(
    [
        ("rid", pa.int64()),
        ("k", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("v", pa.float64()),
        ("i", pa.int64()),
        ("k2", pa.string()),
        ("u", pa.int64()),
    ]
)
DELAY, LATENESS = 5_000, 10_000
SIZE, SLIDE, GAP = 60_000, 20_000, 15_000
AGGREGATES = """count(*) AS n, count(v) AS nv, sum(v) AS sv, avg(v) AS av, min(v) AS mn,
  max(v) AS mx, var_samp(v) AS vs, var_pop(v) AS vp, stddev_samp(v) AS ss, stddev_pop(v) AS sp,
  sum(i) AS si, avg(i) AS ai, min(i) AS mi, max(k2) AS mk2, count(DISTINCT k2) AS dk,
  count_if(v > 0) AS pos,
  sum(i) FILTER (WHERE k2 = 'x') AS sx,
  approx_count_distinct(k2) AS ak, approx_quantile(v, 0.5) AS q50, quantile_cont(v, 0.9) AS q90,
  arg_min(v, u) AS first_v, arg_max(v, u) AS last_v"""
EXACT = ["n", "nv", "si", "mi", "mk2", "dk", "pos", "sx", "first_v", "last_v"]
FLOATS = ["sv", "av", "ai", "mn", "mx", "vs", "vp", "ss", "sp"]
SOURCES = {
    "tumble": f"TUMBLE(events, ts, INTERVAL '{SIZE} ms')",
    "hop": f"HOP(events, ts, INTERVAL '{SLIDE} ms', INTERVAL '{SIZE} ms')",
    "session": f"SESSION(events, ts, INTERVAL '{GAP} ms')",
}


def pipeline_sql(kind: str, emit: str = "final") -> str:
    return (
        f"CREATE PIPELINE oracle AS SELECT k, window_start, window_end, {AGGREGATES} "
        f"FROM {SOURCES[kind]} GROUP BY k, window_start, window_end "
        f"WITH (watermark_delay = '{DELAY} ms', allowed_lateness = '{LATENESS} ms', emit = '{emit}')"
    )


@dataclass
class Stream:
    rows: pa.Table  # in arrival order
    cuts: list[int]  # batch boundaries

    def batches(self) -> Iterator[pa.Table]:
        bounds = [0, *self.cuts, self.rows.num_rows]
        for a, b in itertools.pairwise(bounds):
            yield self.rows.slice(a, b - a)


INT64 = st.integers(-(2**63), 2**63 - 1)
EDGES = [2**63 - 1, -(2**63), 2**62, -(2**62), 2**62 - 1, 2**53 + 1]
# integers that overflow int64 when added: the int64 extremes, 2**62 and their neighbours
HUGE = st.one_of(st.sampled_from(EDGES), INT64, st.integers(-64, 64).map(lambda d: 2**62 + d))
MODEST = st.integers(-(10**12), 10**12)


@st.composite
def streams(draw: st.DrawFn, disorder: int, ints: st.SearchStrategy[int] = MODEST) -> Stream:
    n = draw(st.integers(1, 120))
    keys = draw(st.lists(st.sampled_from(["a", "b", "c", None]), min_size=n, max_size=n))
    # multiples of 5 s put rows exactly a gap (15 s) or a window apart: the boundaries
    times = st.one_of(st.integers(0, 400_000), st.integers(0, 80).map(lambda x: x * 5_000))
    ts = draw(st.lists(times, min_size=n, max_size=n))
    values = st.one_of(st.none(), st.integers(-2_000, 2_000).map(lambda x: x / 8))
    v = draw(st.lists(values, min_size=n, max_size=n))
    i = draw(st.lists(st.one_of(st.none(), ints), min_size=n, max_size=n))
    k2 = draw(st.lists(st.sampled_from(["x", "y", "z", "w", None]), min_size=n, max_size=n))
    jitter = draw(st.lists(st.integers(0, disorder), min_size=n, max_size=n))
    u = draw(st.permutations(list(range(n))))
    order = sorted(range(n), key=lambda r: (ts[r] + jitter[r], r))
    table = pa.table(
        {
            "rid": list(range(n)),
            "k": keys,
            "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "v": v,
            "i": i,
            "k2": k2,
            "u": u,
        },
        schema=SCHEMA,
    ).take(order)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=8))))
    return Stream(table, [c for c in cuts if 0 < c < n])


def windows_of(ts: int) -> list[int]:
    first = (ts - SIZE) // SLIDE * SLIDE + SLIDE
    return list(range(first, ts // SLIDE * SLIDE + 1, SLIDE))


def reference(stream: Stream, kind: str) -> tuple[pa.Table, set[tuple[int, int | None]]]:
    """(counted pairs as rows with ``ws``, late pairs) under the documented lateness rule."""
    wm = -(2**62)
    counted: list[dict[str, Any]] = []
    late: set[tuple[int, int | None]] = set()
    for batch in stream.batches():
        rows = batch.to_pylist()
        for row in rows:
            t = _ms(row["ts"])
            if kind == "session":
                if t < wm - LATENESS:
                    late.add((row["rid"], None))
                else:
                    counted.append({**row, "t": t, "ws": None})
                continue
            starts = [t // SIZE * SIZE] if kind == "tumble" else windows_of(t)
            for s in starts:
                if s + SIZE + LATENESS <= wm:
                    late.add((row["rid"], s))
                else:
                    counted.append({**row, "t": t, "ws": s})
        wm = max(wm, max(_ms(r["ts"]) for r in rows) - DELAY)
    schema = SCHEMA.append(pa.field("t", pa.int64())).append(pa.field("ws", pa.int64()))
    return pa.Table.from_pylist(counted, schema=schema), late


def _ms(value: Any) -> int:
    return int(value.timestamp() * 1000)


def expected(counted: pa.Table, kind: str) -> dict[tuple[Any, int], dict[str, Any]]:
    con = duckdb.connect()
    con.register("pairs", counted)
    aggs = (
        AGGREGATES.split("approx_count_distinct")[0] + "count(DISTINCT k2) AS ak, list(v) AS vals"
    )
    aggs += ", arg_min(v, u) AS first_v, arg_max(v, u) AS last_v"
    aggs += ", approx_quantile(v, 0.5) AS q50, quantile_cont(v, 0.9) AS q90"
    if kind == "session":
        sql = f"""
        WITH s AS (SELECT *, CASE WHEN t - lag(t) OVER (PARTITION BY k ORDER BY t, rid) <= {GAP}
                   THEN 0 ELSE 1 END AS fresh FROM pairs),
             s2 AS (SELECT *, sum(fresh) OVER (PARTITION BY k ORDER BY t, rid
                    ROWS UNBOUNDED PRECEDING) AS sid FROM s)
        SELECT k, min(t) AS ws, {aggs} FROM s2 GROUP BY k, sid"""
    else:
        sql = f"SELECT k, ws, {aggs} FROM pairs GROUP BY k, ws"
    out = con.sql(sql).fetchall()
    names = [d[0] for d in con.sql(sql).description]
    return {(r[0], r[1]): dict(zip(names, r, strict=True)) for r in out}


def run(pipeline: Pipeline, stream: Stream, snapshot_at: int | None = None) -> list[StepOutput]:
    outs = []
    for n, batch in enumerate(stream.batches()):
        if n == snapshot_at:
            restored = Pipeline(pipeline.plan, SCHEMA)
            restored.restore(pipeline.snapshot())
            pipeline = restored
        outs.append(pipeline.process(batch, now_ms=n))
    outs.append(pipeline.finish(now_ms=10**6))
    return outs


def results(outs: list[StepOutput]) -> dict[tuple[Any, int], dict[str, Any]]:
    got: dict[tuple[Any, int], dict[str, Any]] = {}
    for out in outs:
        for row in out.upserts.to_pylist() if out.upserts is not None else []:
            got[(row["k"], _ms(row["window_start"]))] = row
    return got


def check(
    got: dict[tuple[Any, int], dict[str, Any]], want: dict[tuple[Any, int], dict[str, Any]]
) -> None:
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        for name in EXACT:
            assert g[name] == w[name], (key, name, g[name], w[name])
        for name in FLOATS:
            if w[name] is None:
                assert g[name] is None, (key, name)
            else:
                assert math.isclose(g[name], w[name], rel_tol=1e-6, abs_tol=1e-6), (key, name)
        assert abs(g["ak"] - w["ak"]) <= max(1, 0.05 * w["ak"]), (key, g["ak"], w["ak"])
        values = [x for x in w["vals"] if x is not None]
        for name in ("q50", "q90"):  # exact below 512 values; DuckDB's too below ~100
            if not values or len(values) > 100:
                assert (g[name] is None) == (not values), (key, name)
                continue
            assert min(values) <= g[name] <= max(values), (key, name)
            assert math.isclose(g[name], w[name], rel_tol=1e-9, abs_tol=1e-9), (key, name)


def late_pairs(outs: list[StepOutput]) -> set[tuple[int, int | None]]:
    pairs = set()
    for out in outs:
        for row in out.late.to_pylist() if out.late is not None else []:
            start = row["_window_start"]
            pairs.add((row["rid"], None if start is None else _ms(start)))
    return pairs


KINDS = ["tumble", "hop", "session"]
SETTINGS = settings(
    max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(stream=streams(disorder=DELAY + LATENESS))
def test_disorder_within_lateness_matches_batch_query(kind: str, stream: Stream) -> None:
    outs = run(Pipeline.from_sql(pipeline_sql(kind), SCHEMA), stream)
    counted, late = reference(stream, kind)
    assert late == set() and late_pairs(outs) == set()
    check(results(outs), expected(counted, kind))
    keys = [
        k
        for out in outs
        if out.upserts
        for k in zip(
            out.upserts["k"].to_pylist(), out.upserts["window_start"].to_pylist(), strict=True
        )
    ]
    assert len(keys) == len(set(keys)), "emit='final' emits each window once"


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(stream=streams(disorder=200_000))
def test_disorder_beyond_lateness_returns_exactly_the_late_rows(kind: str, stream: Stream) -> None:
    outs = run(Pipeline.from_sql(pipeline_sql(kind), SCHEMA), stream)
    counted, late = reference(stream, kind)
    assert late_pairs(outs) == late
    check(results(outs), expected(counted, kind))


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(stream=streams(disorder=DELAY + LATENESS, ints=HUGE))
def test_integer_sums_past_int64_are_exact(kind: str, stream: Stream) -> None:
    """Sums past +-9.2e18 equal DuckDB's HUGEINT sums; no wrap-around, no float rounding."""
    outs = run(Pipeline.from_sql(pipeline_sql(kind), SCHEMA), stream)
    counted, _ = reference(stream, kind)
    check(results(outs), expected(counted, kind))


def test_result_types_match_the_batch_query() -> None:
    """sum(BIGINT) and count_if are HUGEINT (decimal128(38, 0)), avg(BIGINT) is DOUBLE."""
    pipeline = Pipeline.from_sql(pipeline_sql("tumble"), SCHEMA)
    row = {"rid": 0, "k": "a", "ts": 0, "v": 1.0, "i": 1, "k2": "x", "u": 0}
    counted, _ = reference(Stream(pa.Table.from_pylist([row]).cast(SCHEMA), []), "tumble")
    con = duckdb.connect()
    con.register("pairs", counted)
    batch = con.sql(f"SELECT k, ws, {AGGREGATES.split('approx_count_distinct')[0]} arg_min(v, u) "
                    "AS first_v FROM pairs GROUP BY k, ws").to_arrow_table().schema  # fmt: skip
    for name in [*EXACT, *FLOATS]:
        if name in batch.names:
            assert pipeline.output_schema.field(name).type == batch.field(name).type, name
    assert pipeline.output_schema.field("si").type == pa.decimal128(38, 0)


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(stream=streams(disorder=100_000), data=st.data())
def test_snapshot_restore_mid_stream_changes_nothing(
    kind: str, stream: Stream, data: st.DataObject
) -> None:
    at = data.draw(st.integers(0, len(stream.cuts) + 1))
    plain = run(Pipeline.from_sql(pipeline_sql(kind), SCHEMA), stream)
    resumed = run(Pipeline.from_sql(pipeline_sql(kind), SCHEMA), stream, snapshot_at=at)
    got, want = results(resumed), results(plain)
    assert set(got) == set(want)
    for key, row in want.items():
        for name, value in row.items():
            if isinstance(value, float):
                assert math.isclose(got[key][name], value, rel_tol=1e-9, abs_tol=1e-9)
            else:
                assert got[key][name] == value, (key, name)
    assert late_pairs(resumed) == late_pairs(plain)


@pytest.mark.parametrize("kind", ["tumble", "hop"])
@SETTINGS
@given(stream=streams(disorder=100_000))
def test_emit_changes_converges_to_the_final_result(kind: str, stream: Stream) -> None:
    final = results(run(Pipeline.from_sql(pipeline_sql(kind), SCHEMA), stream))
    changes = results(run(Pipeline.from_sql(pipeline_sql(kind, emit="changes"), SCHEMA), stream))
    counted, _ = reference(stream, kind)
    check(changes, expected(counted, kind))
    assert set(changes) == set(final)


@SETTINGS
@given(stream=streams(disorder=0, ints=st.one_of(MODEST, HUGE)))
def test_group_by_without_window_running_totals(stream: Stream) -> None:
    sql = (
        "CREATE PIPELINE totals AS SELECT k, count(*) AS n, sum(i) AS si, max(v) AS mx "
        "FROM events GROUP BY k WITH (emit = 'changes')"
    )
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    got: dict[Any, dict[str, Any]] = {}
    for n, batch in enumerate(stream.batches()):
        out = pipeline.process(batch, now_ms=n)
        for row in out.upserts.to_pylist() if out.upserts is not None else []:
            got[row["k"]] = row
    con = duckdb.connect()
    con.register("events", stream.rows)
    want = con.sql("SELECT k, count(*) AS n, sum(i) AS si, max(v) AS mx FROM events GROUP BY k")
    for k, n, si, mx in want.fetchall():
        assert (got[k]["n"], got[k]["si"], got[k]["mx"]) == (n, si, mx)
    assert len(got) == len(want.fetchall())


def test_hop_row_late_for_some_windows_counts_in_the_others() -> None:
    pipeline = Pipeline.from_sql(pipeline_sql("hop"), SCHEMA)
    first = pa.table(
        {
            "rid": [0],
            "k": ["a"],
            "ts": pa.array([100_000], pa.int64()),
            "v": [1.0],
            "i": [1],
            "k2": ["x"],
            "u": [0],
        }
    ).cast(SCHEMA)
    pipeline.process(first, 0)  # watermark 95 s: windows starting <= 20 s are closed
    second = first.set_column(0, "rid", pa.array([1])).set_column(
        2, "ts", pa.array([65_000], pa.int64()).cast(SCHEMA.field("ts").type)
    )
    out = pipeline.process(second, 1)
    assert out.late is not None
    assert [_ms(x) for x in out.late["_window_start"].to_pylist()] == [20_000]
    final = results([pipeline.finish(2)])
    assert final[("a", 40_000)]["n"] == 1 and final[("a", 60_000)]["n"] == 2
    assert np.isclose(final[("a", 80_000)]["av"], 1.0)


QUANTILES = """approx_quantile(v, 0.99) AS p99, approx_quantile(v, 0.5) AS p50,
  quantile_cont(v, 0.25) AS c25, median(v) AS med, min(v) AS mn, max(v) AS mx"""


def test_quantiles_of_small_windows_are_duckdbs_and_large_ones_within_the_bound() -> None:
    """Windows of 1, 2, 3, 60 and 90 values answer exactly what DuckDB's batch query
    answers; windows of 600 and 5,000 values (sketched) lie within [min, max] and within
    the documented rank error of DuckDB's exact quantile."""
    rng = np.random.default_rng(11)
    sizes = {"one": 1, "two": 2, "three": 3, "sixty": 60, "ninety": 90, "big": 600, "huge": 5000}
    k = np.concatenate([np.full(n, name, dtype=object) for name, n in sizes.items()])
    total = len(k)
    ts = rng.integers(0, SIZE, total)
    v = np.round(rng.normal(21.5, 0.3, total), 2)
    rows = pa.table(
        {
            "rid": np.arange(total),
            "k": k.tolist(),
            "ts": pa.array(ts, pa.int64()).cast(SCHEMA.field("ts").type),
            "v": v,
            "i": np.zeros(total, np.int64),
            "k2": ["x"] * total,
            "u": np.arange(total),
        },
        schema=SCHEMA,
    ).take(pa.array(rng.permutation(total)))
    sql = (
        f"CREATE PIPELINE q AS SELECT k, window_start, {QUANTILES} "
        f"FROM TUMBLE(events, ts, INTERVAL '{SIZE} ms') GROUP BY k, window_start"
    )
    cuts = sorted(rng.choice(np.arange(1, total), 12, replace=False).tolist())
    got = results(run(Pipeline.from_sql(sql, SCHEMA), Stream(rows, cuts), snapshot_at=6))
    con = duckdb.connect()
    con.register("events", rows)
    batch = con.sql(f"SELECT k, {QUANTILES}, list(v) AS vals FROM events GROUP BY k")
    names = [d[0] for d in batch.description]
    for record in batch.fetchall():
        want = dict(zip(names, record, strict=True))
        row = got[(want["k"], 0)]
        values = np.sort(np.array(want["vals"]))
        for name, q in (("p99", 0.99), ("p50", 0.5), ("c25", 0.25), ("med", 0.5)):
            assert want["mn"] <= row[name] <= want["mx"], (want["k"], name)
            if len(values) <= EXACT_LIMIT:  # DuckDB reads q as a FLOAT: 0.99 is 0.9900000095
                assert math.isclose(row[name], want[name], rel_tol=1e-7), (want["k"], name)
            else:
                rank_low = np.searchsorted(values, row[name], side="left") / len(values)
                rank_high = np.searchsorted(values, row[name], side="right") / len(values)
                slack = RANK_ERROR + 1 / len(values)
                assert rank_low - slack <= q <= rank_high + slack, (want["k"], name)
    one = got[("one", 0)]
    assert one["p99"] == one["p50"] == one["med"] == one["mx"]
