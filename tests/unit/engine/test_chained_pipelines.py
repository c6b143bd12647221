"""Oracle tests of pipelines over pipelines (subqueries in FROM, ``FROM <pipeline>``) and
of window joins: the streaming result over random micro-batches, with a snapshot and
restore somewhere, equals the same nested query run by DuckDB in one batch over the rows
the pipeline did not declare late. Every output column is compared."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine import Pipeline, StepOutput
from headwater.errors import UnsupportedSQL

T = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([("rid", pa.int64()), ("k", pa.string()), ("ts", T), ("v", pa.int64())])
SCHEMAS = {"sa": SCHEMA, "sb": SCHEMA}
STREAMS = ["sa", "sb"]
PER_KEY = ("SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi "
           "FROM TUMBLE({s}, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end")  # fmt: skip
# the same in DuckDB batch: window_start / window_end from time_bucket
BATCH_PER_KEY = ("SELECT k, time_bucket(INTERVAL '1 minute', ts) AS window_start, "
                 "time_bucket(INTERVAL '1 minute', ts) + INTERVAL '1 minute' AS window_end, "
                 "count(*) AS n, sum(v) AS s, max(v) AS hi FROM {s} GROUP BY ALL")  # fmt: skip
OUTER = ("SELECT window_start, window_end, max(n) AS top, sum(s) AS total, min(hi) AS low_hi, "
         "count(*) AS keys FROM ({inner}) w GROUP BY window_start, window_end")  # fmt: skip


def table(rows: list[tuple[str | None, int, int]], base: int = 0) -> pa.Table:
    return pa.table({"rid": list(range(base, base + len(rows))), "k": [r[0] for r in rows],
                     "ts": pa.array([r[1] for r in rows], T), "v": [r[2] for r in rows]},
                    schema=SCHEMA)  # fmt: skip


def feed(
    p: Pipeline, sql: str, batches: list[tuple[str, pa.Table]], restore: int | None, **kw: Any
) -> StepOutput:
    out = StepOutput()
    for i, (stream, batch) in enumerate(batches):
        if i == restore:
            state = p.snapshot()
            p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS, **kw)
            p.restore(state)
        out = out.then(p.process(batch, 0, stream), p.output_key)
    out = out.then(p.finish(0), p.output_key)
    assert p.status()["state_rows"] == 0  # the end of input let every window and row go
    return out


def kept(t: pa.Table, late: pa.Table | None, stream: str | None = None) -> pa.Table:
    if late is None or not late.num_rows:
        return t
    gone = {r["rid"] for r in late.to_pylist() if stream is None or r.get("_stream") == stream}
    return t.filter(pa.array([r not in gone for r in t["rid"].to_pylist()]))


def batch_rows(sql: str, **tables: pa.Table) -> list[dict[str, Any]]:
    con = duckdb.connect()
    for name, t in tables.items():
        con.register(name, t)
    return con.sql(sql).to_arrow_table().to_pylist()


def same(got: list[dict[str, Any]], want: list[dict[str, Any]], key: Any) -> None:
    got, want = sorted(got, key=key), sorted(want, key=key)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for col in g:
            if isinstance(g[col], float) or isinstance(w[col], float):
                assert math.isclose(float(g[col]), float(w[col]), rel_tol=1e-9), (col, g, w)
            else:
                assert g[col] == w[col] or (g[col] is None and w[col] is None), (col, g, w)


ROWS = st.lists(
    st.tuples(st.sampled_from(["x", "y", "z", None]), st.integers(0, 300_000),
              st.integers(-9, 9)),
    min_size=1, max_size=60,
)  # fmt: skip
CUTS = st.lists(st.integers(1, 20), min_size=1, max_size=5)


def cut(t: pa.Table, sizes: list[int], stream: str = "sa") -> list[tuple[str, pa.Table]]:
    out, start = [], 0
    for size in sizes * 60:
        if start >= t.num_rows:
            break
        out.append((stream, t.slice(start, size)))
        start += size
    return out


@settings(max_examples=examples(30), deadline=None)
@given(rows=ROWS, sizes=CUTS, delay=st.sampled_from([0, 20_000, 400_000]),
       restore=st.none() | st.integers(0, 4))  # fmt: skip
def test_an_aggregate_of_windowed_aggregates_equals_the_nested_batch_query(
    rows: list, sizes: list[int], delay: int, restore: int | None
) -> None:
    t = table(rows)
    sql = (f"CREATE PIPELINE m AS {OUTER.format(inner=PER_KEY.format(s='sa'))} "
           f"WITH (watermark_delay = '{delay} ms')")  # fmt: skip
    p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
    out = feed(p, sql, cut(t, sizes), restore)
    assert p.output_key == ("window_start",)
    want = batch_rows(OUTER.format(inner=BATCH_PER_KEY.format(s="sa")), sa=kept(t, out.late))
    same(out.upserts.to_pylist() if out.upserts else [], want, lambda r: r["window_start"])
    if delay == 400_000:
        assert out.late is None or out.late.num_rows == 0


@settings(max_examples=examples(20), deadline=None)
@given(rows=ROWS, sizes=CUTS)
def test_a_pipeline_over_a_pipeline_equals_the_subquery_form(rows: list, sizes: list[int]) -> None:
    t = table(rows)
    upstream = f"CREATE PIPELINE per_key AS {PER_KEY.format(s='sa')}"
    over = ("CREATE PIPELINE busy AS SELECT k, window_start, n, s FROM per_key "
            "WHERE n >= 2")  # fmt: skip
    inline = f"CREATE PIPELINE busy AS SELECT k, window_start, n, s FROM ({PER_KEY.format(s='sa')}) p WHERE n >= 2"  # fmt: skip
    pipelines = {"per_key": upstream}
    a = Pipeline.from_sql(over, SCHEMAS, streams=STREAMS, pipelines=pipelines)
    b = Pipeline.from_sql(inline, SCHEMAS, streams=STREAMS)
    assert a.plan.inputs == ("sa",) and a.output_key == ()
    got = feed(a, over, cut(t, sizes), 1, pipelines=pipelines)
    want = feed(b, inline, cut(t, sizes), None)
    assert got.appends is not None and want.appends is not None
    key = lambda r: (r["k"] or "", r["window_start"])  # noqa: E731
    assert sorted(got.appends.to_pylist(), key=key) == sorted(want.appends.to_pylist(), key=key)
    batch = batch_rows(f"SELECT k, window_start, n, s FROM ({BATCH_PER_KEY.format(s='sa')}) "
                       "WHERE n >= 2", sa=kept(t, got.late))  # fmt: skip
    same(got.appends.to_pylist(), batch, key)


WINDOW_JOIN = (
    "SELECT a.k, a.window_start, a.window_end, a.n AS an, b.n AS bn, a.s + b.hi AS mix FROM "
    "({left}) a {how} ({right}) b ON a.k = b.k AND a.window_start = b.window_start "
    "AND a.window_end = b.window_end"
)


@settings(max_examples=examples(30), deadline=None)
@given(left=ROWS, right=ROWS, sizes=CUTS, order=st.randoms(use_true_random=False),
       how=st.sampled_from(["JOIN", "LEFT JOIN"]), delay=st.sampled_from([0, 30_000]),
       restore=st.none() | st.integers(0, 5))  # fmt: skip
def test_a_window_join_equals_the_batch_join_of_the_two_aggregates(
    left: list, right: list, sizes: list[int], order: Any, how: str, delay: int,
    restore: int | None,
) -> None:  # fmt: skip
    ta, tb = table(left), table(right, 1000)
    batches = cut(ta, sizes, "sa") + cut(tb, sizes, "sb")
    order.shuffle(batches)
    body = WINDOW_JOIN.format(left=PER_KEY.format(s="sa"), right=PER_KEY.format(s="sb"), how=how)
    sql = f"CREATE PIPELINE wj AS {body} WITH (watermark_delay = '{delay} ms')"
    p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
    out = feed(p, sql, batches, restore)
    batch = WINDOW_JOIN.format(left=BATCH_PER_KEY.format(s="sa"),
                               right=BATCH_PER_KEY.format(s="sb"), how=how)  # fmt: skip
    want = batch_rows(batch, sa=kept(ta, out.late, "sa"), sb=kept(tb, out.late, "sb"))
    key = lambda r: (r["k"] or "", r["window_start"], r["bn"] or 0)  # noqa: E731
    same(out.appends.to_pylist() if out.appends else [], want, key)


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        (f"SELECT a.k FROM ({PER_KEY.format(s='sa')}) a JOIN ({PER_KEY.format(s='sb')}) b "
         "ON a.k = b.k", "window join"),
        (f"SELECT a.k FROM ({PER_KEY.format(s='sa')}) a JOIN sb b ON a.k = b.k "
         "AND a.window_end = b.ts", "join of a windowed aggregate with a stream"),
        ("SELECT window_start, max(n) FROM (SELECT k, window_start, window_end, count(*) AS n "
         "FROM HOP(sa, ts, INTERVAL '10 seconds', INTERVAL '1 minute') "
         "GROUP BY k, window_start, window_end) w GROUP BY window_start, window_end",
         "GROUP BY window_start, window_end over HOP windows"),
    ],
)  # fmt: skip
def test_unsupported_nesting_is_refused_by_name(sql: str, construct: str) -> None:
    with pytest.raises(UnsupportedSQL) as err:
        Pipeline.from_sql(f"CREATE PIPELINE x AS {sql}", SCHEMAS, streams=STREAMS)
    assert err.value.details["construct"] == construct


JOINED = ("SELECT a.k, a.ts, b.v FROM sa a {how} sb b ON a.k = b.k "
          "AND a.ts BETWEEN b.ts - INTERVAL '10 seconds' AND b.ts")  # fmt: skip
PER_MINUTE = ("SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, count(v) AS nv "
              "FROM TUMBLE(({joined}), ts, INTERVAL '1 minute') j GROUP BY k, window_start, "
              "window_end")  # fmt: skip
BATCH_PER_MINUTE = ("SELECT k, time_bucket(INTERVAL '1 minute', ts) AS window_start, "
                    "time_bucket(INTERVAL '1 minute', ts) + INTERVAL '1 minute' AS window_end, "
                    "count(*) AS n, sum(v) AS s, count(v) AS nv FROM ({joined}) GROUP BY ALL")  # fmt: skip


@settings(max_examples=examples(30), deadline=None)
@given(left=ROWS, right=ROWS, sizes=CUTS, order=st.randoms(use_true_random=False),
       how=st.sampled_from(["JOIN", "LEFT JOIN"]), delay=st.sampled_from([0, 30_000]),
       restore=st.none() | st.integers(0, 5))  # fmt: skip
def test_windows_over_an_interval_join_equal_the_batch_query(
    left: list, right: list, sizes: list[int], order: Any, how: str, delay: int,
    restore: int | None,
) -> None:  # fmt: skip
    ta, tb = table(left), table(right, 1000)
    batches = cut(ta, sizes, "sa") + cut(tb, sizes, "sb")
    order.shuffle(batches)
    sql = (f"CREATE PIPELINE pm AS {PER_MINUTE.format(joined=JOINED.format(how=how))} "
           f"WITH (watermark_delay = '{delay} ms')")  # fmt: skip
    p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
    out = feed(p, sql, batches, restore)
    batch = BATCH_PER_MINUTE.format(joined=JOINED.format(how=how))
    want = batch_rows(batch, sa=kept(ta, out.late, "sa"), sb=kept(tb, out.late, "sb"))
    rows = out.upserts.to_pylist() if out.upserts else []
    assert all(
        r["_reason"] == "behind_watermark" for r in (out.late.to_pylist() if out.late else [])
    )
    same(rows, want, lambda r: (r["k"] or "", r["window_start"]))
