"""Window Top-N against DuckDB batch: the same rows, ranked in one query.

Random rows (keys with NULLs, values with ties and NULLs) arrive in event-time order,
cut into random micro-batches, with a snapshot/restore at a random batch. The reference
aggregates every window in one DuckDB query and ranks it with the documented tie rule
(the other result columns, in SELECT order, ascending, NULLs last); every column of
every row must match.
"""

from __future__ import annotations

import itertools
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine import Pipeline
from headwater.errors import QueryError, UnsupportedSQL

SCHEMA = pa.schema(
    [("k", pa.string()), ("g", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
     ("v", pa.int64())]
)  # fmt: skip
SIZE, SLIDE = 60_000, 20_000
SOURCES = {
    "tumble": f"TUMBLE(events, ts, INTERVAL '{SIZE} ms')",
    "hop": f"HOP(events, ts, INTERVAL '{SLIDE} ms', INTERVAL '{SIZE} ms')",
}
AGGS = "max(v) AS hi, count(*) AS n, sum(v) AS total"


def subquery_form(source: str, partition: str, order: str, n: int) -> str:
    return (
        "CREATE PIPELINE top AS SELECT * FROM (SELECT k, g, window_start, window_end, "
        f"{AGGS}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}) AS rn "
        f"FROM {source} GROUP BY k, g, window_start, window_end) WHERE rn <= {n}"
    )


def qualify_form(source: str, partition: str, order: str, n: int) -> str:
    return (
        f"CREATE PIPELINE top AS SELECT k, g, window_start, window_end, {AGGS} FROM {source} "
        f"GROUP BY k, g, window_start, window_end "
        f"QUALIFY rank() OVER (PARTITION BY {partition} ORDER BY {order}) <= {n}"
    )


def reference(rows: pa.Table, kind: str, form: str, partition: str, order: str, n: int) -> list:
    """The same ranking in one DuckDB batch query over every window of ``rows``."""
    con = duckdb.connect()
    con.register("events", rows)
    hops = SIZE // SLIDE if kind == "hop" else 1
    slide = SLIDE if kind == "hop" else SIZE
    windows = f"""SELECT k, g, v, ws, ws + {SIZE} AS we FROM (SELECT *,
        (epoch_ms(ts) // {slide}) * {slide} - j * {slide} AS ws
        FROM events, range({hops}) AS r(j))"""
    agg = f"""SELECT k, g, make_timestamp(ws * 1000) AS window_start,
        make_timestamp(we * 1000) AS window_end, {AGGS} FROM ({windows})
        GROUP BY k, g, ws, we"""
    ties = "k, g, window_start, window_end, hi, n, total"
    if form == "subquery":
        call = f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}, {ties})"
        sql = f"SELECT * FROM (SELECT *, {call} AS rn FROM ({agg})) WHERE rn <= {n}"
    else:
        call = f"rank() OVER (PARTITION BY {partition} ORDER BY {order})"
        sql = f"SELECT * FROM ({agg}) QUALIFY {call} <= {n}"
    return sorted((_plain(r) for r in con.sql(sql).fetchall()), key=repr)


def _plain(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v.replace(tzinfo=None) if hasattr(v, "tzinfo") else v for v in row)


@st.composite
def inputs(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    n = draw(st.integers(1, 80))
    col = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    ts = sorted(col(st.integers(0, 300_000)))
    table = pa.table(
        {
            "k": col(st.sampled_from(["a", "b", "c", "d", None])),
            "g": col(st.sampled_from(["x", "y", None])),
            "ts": pa.array(ts, pa.int64()).cast(SCHEMA.field("ts").type),
            "v": col(st.one_of(st.none(), st.integers(0, 5))),  # few values: many ties
        },
        schema=SCHEMA,
    )
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=6))))
    return table, [c for c in cuts if 0 < c < n]


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    data=inputs(),
    kind=st.sampled_from(["tumble", "hop"]),
    form=st.sampled_from(["subquery", "qualify"]),
    partition=st.sampled_from(["window_start", "window_start, g", "window_end, k"]),
    order=st.sampled_from(["max(v) DESC", "count(*)", "sum(v) DESC NULLS FIRST, max(v)"]),
    n=st.integers(1, 3),
    snapshot_at=st.integers(0, 6),
)
def test_top_n_matches_duckdb_batch(
    data: tuple[pa.Table, list[int]], kind: str, form: str, partition: str, order: str,
    n: int, snapshot_at: int,
) -> None:  # fmt: skip
    rows, cuts = data
    build = subquery_form if form == "subquery" else qualify_form
    pipeline = Pipeline.from_sql(build(SOURCES[kind], partition, order, n), SCHEMA)
    assert pipeline.output_key == ()
    got: list[tuple[Any, ...]] = []
    for i, (a, b) in enumerate(itertools.pairwise([0, *cuts, rows.num_rows])):
        if i == snapshot_at:
            restored = Pipeline(pipeline.plan, SCHEMA)
            restored.restore(pipeline.snapshot())
            pipeline = restored
        out = pipeline.process(rows.slice(a, b - a), now_ms=0)
        assert out.upserts is None
        got += [tuple(r.values()) for r in out.appends.to_pylist()] if out.appends else []
    out = pipeline.finish(now_ms=0)
    got += [tuple(r.values()) for r in out.appends.to_pylist()] if out.appends else []
    named = order.replace("max(v)", "hi").replace("count(*)", "n").replace("sum(v)", "total")
    want = reference(rows, kind, form, partition, named, n)
    assert sorted((_plain(r) for r in got), key=repr) == want


def rows_form(source: str, partition: str, order: str, n: int) -> str:
    return (
        "CREATE PIPELINE top AS SELECT * FROM (SELECT k, g, v, ts, window_start, "
        f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}) AS rn "
        f"FROM {source}) WHERE rn <= {n}"
    )


def rows_reference(rows: pa.Table, kind: str, partition: str, order: str, n: int) -> list:
    con = duckdb.connect()
    con.register("events", rows)
    hops = SIZE // SLIDE if kind == "hop" else 1
    slide = SLIDE if kind == "hop" else SIZE
    windows = f"""SELECT k, g, v, epoch_ms(ts) AS ts, make_timestamp(ws * 1000) AS window_start,
        make_timestamp((ws + {SIZE}) * 1000) AS window_end FROM
        (SELECT *, (epoch_ms(ts) // {slide}) * {slide} - j * {slide} AS ws
         FROM events, range({hops}) AS r(j))"""
    call = f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}, k, g, v, ts)"
    sql = f"""SELECT k, g, v, ts, window_start, rn FROM
        (SELECT *, {call} AS rn FROM ({windows})) WHERE rn <= {n}"""
    return sorted((_plain(r) for r in con.sql(sql).fetchall()), key=repr)


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    data=inputs(),
    kind=st.sampled_from(["tumble", "hop"]),
    partition=st.sampled_from(["window_start", "window_start, g", "window_end, k"]),
    order=st.sampled_from(["v DESC", "v NULLS FIRST", "ts DESC, v"]),
    n=st.integers(1, 3),
    snapshot_at=st.integers(0, 6),
)
def test_top_n_over_window_rows_matches_duckdb_batch(
    data: tuple[pa.Table, list[int]], kind: str, partition: str, order: str, n: int,
    snapshot_at: int,
) -> None:  # fmt: skip
    rows, cuts = data
    pipeline = Pipeline.from_sql(rows_form(SOURCES[kind], partition, order, n), SCHEMA)
    got: list[tuple[Any, ...]] = []
    for i, (a, b) in enumerate(itertools.pairwise([0, *cuts, rows.num_rows])):
        if i == snapshot_at:
            restored = Pipeline(pipeline.plan, SCHEMA)
            restored.restore(pipeline.snapshot())
            pipeline = restored
        out = pipeline.process(rows.slice(a, b - a), now_ms=0)
        got += [tuple(r.values()) for r in out.appends.to_pylist()] if out.appends else []
    out = pipeline.finish(now_ms=0)
    got += [tuple(r.values()) for r in out.appends.to_pylist()] if out.appends else []
    got = [(*r[:3], round(r[3].timestamp() * 1000), *r[4:]) for r in got]
    want = rows_reference(rows, kind, partition, order, n)
    assert sorted((_plain(r) for r in got), key=repr) == want


def test_window_rows_arriving_after_the_window_closed_are_late() -> None:
    pipeline = Pipeline.from_sql(rows_form(SOURCES["tumble"], "window_start", "v", 1), SCHEMA)
    at = SCHEMA.field("ts").type
    ahead = pa.table({"k": ["a"], "g": ["x"], "ts": pa.array([200_000], at), "v": [1]}, SCHEMA)
    assert pipeline.process(ahead, now_ms=0).appends is None
    behind = pa.table({"k": ["b"], "g": ["x"], "ts": pa.array([1_000], at), "v": [0]}, SCHEMA)
    out = pipeline.process(behind, now_ms=0)
    assert out.late is not None and out.late["k"].to_pylist() == ["b"]
    assert pipeline.status()["open_windows"] == 1


def test_each_window_is_ranked_when_it_closes() -> None:
    sql = qualify_form(SOURCES["tumble"], "window_start", "max(v) DESC", 1)
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    times = pa.array([1_000, 2_000, 3_000], pa.int64()).cast(SCHEMA.field("ts").type)
    first = pa.table({"k": ["a", "b", "c"], "g": ["x"] * 3, "ts": times, "v": [3, 9, 9]}, SCHEMA)
    assert pipeline.process(first, now_ms=0).appends is None  # the window is open
    later = pa.table({"k": ["a"], "g": ["x"], "ts": pa.array([61_000], times.type), "v": [1]})
    out = pipeline.process(later.cast(SCHEMA), now_ms=0)
    assert out.appends is not None
    assert [(r["k"], r["hi"]) for r in out.appends.to_pylist()] == [("b", 9), ("c", 9)]  # a tie


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        (qualify_form(SOURCES["tumble"], "k", "max(v)", 1), "Top-N without window_start"),
        (qualify_form("SESSION(events, ts, INTERVAL '1 minute')", "window_start", "max(v)", 1),
         "Top-N over other than TUMBLE/HOP windows"),
        (qualify_form(SOURCES["tumble"], "window_start", "max(v)", 1)
         + " WITH (emit = 'changes')", "Top-N with emit = 'changes'"),
        ("CREATE PIPELINE t AS SELECT * FROM (SELECT k, ts, ROW_NUMBER() OVER (PARTITION BY "
         "window_start ORDER BY v) AS rn FROM TUMBLE(events, ts, INTERVAL '1 minute')) "
         "WHERE rn <= 1 WITH (emit = 'changes')", "Top-N with emit = 'changes'"),
        ("CREATE PIPELINE t AS SELECT k, window_start, max(v) AS hi, ROW_NUMBER() OVER "
         "(PARTITION BY window_start ORDER BY max(v)) AS rn FROM TUMBLE(events, ts, "
         "INTERVAL '1 minute') GROUP BY k, window_start, window_end",
         "OVER without a filter"),
        ("CREATE PIPELINE t AS SELECT count(*) FROM (SELECT k, window_start, ROW_NUMBER() OVER "
         "(PARTITION BY window_start ORDER BY max(v)) AS rn FROM TUMBLE(events, ts, "
         "INTERVAL '1 minute') GROUP BY k, window_start, window_end) WHERE rn <= 2 GROUP BY k",
         "GROUP around a Top-N subquery"),
    ],
)  # fmt: skip
def test_unsupported_top_n_names_the_construct(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedSQL) as caught:
        Pipeline.from_sql(sql, SCHEMA)
    assert construct in str(caught.value)


def test_a_filter_on_an_unknown_column_fails_at_creation() -> None:
    sql = subquery_form(SOURCES["tumble"], "window_start", "max(v)", 1).replace("rn <=", "nope <=")
    with pytest.raises(QueryError, match="nope"):
        Pipeline.from_sql(sql, SCHEMA)
