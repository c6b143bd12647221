"""Window Top-N with emit = 'changes' against DuckDB batch, after every micro-batch.

Random rows arrive in event-time order, cut into random micro-batches, with a
snapshot/restore at a random batch. The result table is the upserts applied by the
pipeline's output key (partition columns and rank); after every batch it must equal
DuckDB's ranking of every window over the rows seen so far: rows that left the top N
are gone (their rank holds the row that replaced them), closed windows keep their
final top N.
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
from headwater.errors import UnsupportedSQL

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
CHANGES = " WITH (emit = 'changes')"


def subquery_form(source: str, partition: str, order: str, n: int) -> str:
    return (
        "CREATE PIPELINE top AS SELECT * FROM (SELECT k, g, window_start, window_end, "
        f"{AGGS}, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}) AS rn "
        f"FROM {source} GROUP BY k, g, window_start, window_end) WHERE rn <= {n}" + CHANGES
    )


def qualify_form(source: str, partition: str, order: str, n: int) -> str:
    return (
        f"CREATE PIPELINE top AS SELECT k, g, window_start, window_end, {AGGS}, "
        f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}) AS rn FROM {source} "
        f"GROUP BY k, g, window_start, window_end QUALIFY rn <= {n}" + CHANGES
    )


def reference(rows: pa.Table, kind: str, partition: str, order: str, n: int) -> list:
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
    call = f"ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {order}, {ties})"
    sql = f"SELECT * FROM (SELECT *, {call} AS rn FROM ({agg})) WHERE rn <= {n}"
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
    order=st.sampled_from(["max(v) DESC", "count(*) DESC", "sum(v) DESC NULLS FIRST, max(v)"]),
    n=st.integers(1, 3),
    snapshot_at=st.integers(0, 6),
)
def test_the_result_table_is_duckdbs_top_n_after_every_batch(
    data: tuple[pa.Table, list[int]], kind: str, form: str, partition: str, order: str,
    n: int, snapshot_at: int,
) -> None:  # fmt: skip
    rows, cuts = data
    build = subquery_form if form == "subquery" else qualify_form
    pipeline = Pipeline.from_sql(build(SOURCES[kind], partition, order, n), SCHEMA)
    key = pipeline.output_key
    assert key == (*(p.strip() for p in partition.split(",")), "rn")
    table: dict[tuple[Any, ...], dict[str, Any]] = {}
    named = order.replace("max(v)", "hi").replace("count(*)", "n").replace("sum(v)", "total")
    for i, (a, b) in enumerate(itertools.pairwise([0, *cuts, rows.num_rows])):
        if i == snapshot_at:
            restored = Pipeline(pipeline.plan, SCHEMA)
            restored.restore(pipeline.snapshot())
            pipeline = restored
        out = pipeline.process(rows.slice(a, b - a), now_ms=0)
        assert out.appends is None
        for r in out.upserts.to_pylist() if out.upserts is not None else []:
            table[tuple(r[c] for c in key)] = r
        got = sorted((_plain(tuple(r.values())) for r in table.values()), key=repr)
        assert got == reference(rows.slice(0, b), kind, partition, named, n)
    assert pipeline.finish(now_ms=0).upserts is None  # nothing changes when windows close
    assert pipeline.status()["state_rows"] == 0


def test_a_row_leaving_the_top_is_replaced_and_only_changes_are_emitted() -> None:
    sql = qualify_form(SOURCES["tumble"], "window_start", "max(v) DESC", 2)
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    at = SCHEMA.field("ts").type

    def batch(ks: list[str], vs: list[int], t: int = 1_000) -> pa.Table:
        return pa.table({"k": ks, "g": ["x"] * len(ks), "ts": pa.array([t] * len(ks), at),
                         "v": vs}, SCHEMA)  # fmt: skip

    first = pipeline.process(batch(["a", "b"], [5, 3]), 0).upserts
    assert [(r["k"], r["rn"]) for r in first.to_pylist()] == [("a", 1), ("b", 2)]
    # c beats b: rank 2 now holds c, b is gone; a (rank 1) unchanged, not sent again
    second = pipeline.process(batch(["c"], [4]), 0).upserts
    assert [(r["k"], r["hi"], r["rn"]) for r in second.to_pylist()] == [("c", 4, 2)]
    # d below the top: nothing changes
    assert pipeline.process(batch(["d"], [1]), 0).upserts is None
    # a window further on closes this one: its state is dropped, its rows stay
    later = pipeline.process(batch(["a"], [0], t=200_000), 0).upserts
    assert [(r["k"], r["rn"]) for r in later.to_pylist()] == [("a", 1)]
    # the open window: its group in the aggregate, its row kept for ranking, and shown
    assert pipeline.status()["state_rows"] == 3


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        (qualify_form(SOURCES["tumble"], "window_start", "max(v)", 1).replace(
            "ROW_NUMBER()", "rank()"), "and RANK()"),
        (qualify_form(SOURCES["tumble"], "window_start", "max(v)", 1).replace(
            "rn <= 1", "rn <= 1 AND hi > 2"), "filtered on other than the rank"),
        (qualify_form(SOURCES["tumble"], "window_start, g", "max(v)", 1).replace(
            "SELECT k, g,", "SELECT k,"), "without the rank and PARTITION BY columns"),
        ("CREATE PIPELINE t AS SELECT k, window_start, max(v) AS hi FROM TUMBLE(events, ts, "
         "INTERVAL '1 minute') GROUP BY k, window_start, window_end QUALIFY ROW_NUMBER() OVER "
         "(PARTITION BY window_start ORDER BY max(v)) <= 1" + CHANGES,
         "without the rank and PARTITION BY columns"),
        ("CREATE PIPELINE t AS SELECT * FROM (SELECT k, ts, ROW_NUMBER() OVER (PARTITION BY "
         "window_start ORDER BY v) AS rn FROM TUMBLE(events, ts, INTERVAL '1 minute')) "
         "WHERE rn <= 1" + CHANGES, "over window rows"),
    ],
)  # fmt: skip
def test_what_could_empty_a_rank_is_refused(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedSQL) as caught:
        Pipeline.from_sql(sql, SCHEMA)
    assert "Top-N with emit = 'changes'" in str(caught.value)
    assert construct in str(caught.value)
