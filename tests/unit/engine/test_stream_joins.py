"""Oracle tests of stream–stream joins: the streaming result equals DuckDB's batch join.

Two random streams are cut into micro-batches and interleaved at random (with a
snapshot/restore somewhere, sometimes). Rows the pipeline declares late go to its late
table; every other row must be joined exactly as one batch query joins them, every
output column compared.
"""

from __future__ import annotations

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
CLICKS = pa.schema([("rid", pa.int64()), ("k", pa.string()), ("ts", T), ("v", pa.int64())])
VIEWS = pa.schema([("rid", pa.int64()), ("k", pa.string()), ("ts", T), ("w", pa.float64())])
SCHEMAS = {"clicks": CLICKS, "views": VIEWS}
STREAMS = ["clicks", "views"]
SELECT = "SELECT c.rid AS crid, v.rid AS vrid, c.k, c.ts AS cts, v.ts AS vts, c.v, w, c.v * w AS vw"
INTERVAL_ON = "ON c.k = v.k AND c.ts BETWEEN v.ts - INTERVAL '10 seconds' AND v.ts"


def rows_of(schema: pa.Schema, rows: list[tuple[str | None, int, float]], base: int) -> pa.Table:
    value = [int(r[2]) for r in rows] if schema is CLICKS else [r[2] for r in rows]
    return pa.table(
        {"rid": list(range(base, base + len(rows))), "k": [r[0] for r in rows],
         "ts": pa.array([r[1] for r in rows], T), schema.names[3]: value},
        schema=schema,
    )  # fmt: skip


def run(
    sql: str, batches: list[tuple[str, pa.Table]], restore_at: int | None, now: int = 0
) -> tuple[StepOutput, Pipeline]:
    p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
    out = StepOutput()
    for i, (stream, batch) in enumerate(batches):
        if i == restore_at:
            state = p.snapshot()
            p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
            p.restore(state)
        out = out.then(p.process(batch, now, stream))
        out = out.then(p.on_time(now))
    return out.then(p.finish(now)), p


def batch_join(query: str, clicks: pa.Table, views: pa.Table) -> list[dict[str, Any]]:
    con = duckdb.connect()
    con.register("clicks", clicks)
    con.register("views", views)
    return sorted_rows(con.sql(query).to_arrow_table())


def sorted_rows(table: pa.Table | None) -> list[dict[str, Any]]:
    rows = [] if table is None else table.to_pylist()
    return sorted(rows, key=lambda r: (r["crid"], -1 if r["vrid"] is None else r["vrid"]))


def not_late(table: pa.Table, late: pa.Table | None, stream: str) -> pa.Table:
    if late is None:
        return table
    gone = {r["rid"] for r in late.to_pylist() if r["_stream"] == stream}
    return table.filter(pa.array([r not in gone for r in table["rid"].to_pylist()]))


ROW = st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 90_000),
                st.integers(-5, 5).map(float))  # fmt: skip
STREAM_ROWS = st.lists(ROW, max_size=25)


@settings(max_examples=examples(40), deadline=None)
@given(
    clicks=STREAM_ROWS,
    views=STREAM_ROWS,
    cuts=st.lists(st.integers(1, 8), min_size=1, max_size=6),
    order=st.randoms(use_true_random=False),
    how=st.sampled_from(["JOIN", "LEFT JOIN"]),
    delay=st.sampled_from([0, 5_000, 100_000]),
    restore=st.none() | st.integers(0, 6),
)
def test_interval_join_equals_the_batch_join_of_rows_not_late(
    clicks: list, views: list, cuts: list[int], order: Any, how: str, delay: int,
    restore: int | None,
) -> None:  # fmt: skip
    c, v = rows_of(CLICKS, clicks, 0), rows_of(VIEWS, views, 1000)
    batches: list[tuple[str, pa.Table]] = []
    for name, table in (("clicks", c), ("views", v)):
        start = 0
        for size in cuts * 10:
            if start >= table.num_rows:
                break
            batches.append((name, table.slice(start, size)))
            start += size
    order.shuffle(batches)
    body = f"{SELECT} FROM clicks c {how} views v {INTERVAL_ON}"
    sql = f"CREATE PIPELINE j AS {body} WITH (watermark_delay = '{delay} ms')"
    out, p = run(sql, batches, restore)
    assert out.upserts is None
    expected = batch_join(body, not_late(c, out.late, "clicks"), not_late(v, out.late, "views"))
    assert sorted_rows(out.appends) == expected
    if delay == 100_000:  # nothing is ever behind the watermark
        assert out.late is None or out.late.num_rows == 0
    assert p.status()["state_rows"] == 0  # the end of input let every row go


@settings(max_examples=examples(30), deadline=None)
@given(clicks=STREAM_ROWS, views=STREAM_ROWS, how=st.sampled_from(["JOIN", "LEFT JOIN"]),
       split=st.integers(0, 25))  # fmt: skip
def test_regular_join_with_a_long_ttl_equals_the_batch_join(
    clicks: list, views: list, how: str, split: int
) -> None:
    c, v = rows_of(CLICKS, clicks, 0), rows_of(VIEWS, views, 1000)
    batches = [("views", v.slice(0, split)), ("clicks", c), ("views", v.slice(split))]
    body = f"{SELECT} FROM clicks c {how} views v ON c.k = v.k AND c.v >= w"
    sql = (f"CREATE PIPELINE j AS {body} WITH (state_ttl = '1 hour', "
           "time_columns = 'c.ts, v.ts', watermark_delay = '2 minutes')")  # fmt: skip
    out, _ = run(sql, batches, restore_at=2)
    assert sorted_rows(out.appends) == batch_join(body, c, v)


def test_regular_join_forgets_rows_past_their_ttl_and_late_rows_go_to_the_late_table() -> None:
    sql = ("CREATE PIPELINE j AS SELECT c.rid AS crid, v.rid AS vrid FROM clicks c JOIN views v "
           "ON c.k = v.k WITH (state_ttl = '1 minute', time_columns = 'c.ts, v.ts')")  # fmt: skip
    p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
    p.process(rows_of(CLICKS, [("a", 0, 1.0)], 0), 0, "clicks")
    p.process(rows_of(VIEWS, [("a", 30_000, 1.0)], 100), 0, "views")
    assert p.status()["state_rows"] == 2
    p.process(rows_of(CLICKS, [("b", 200_000, 1.0)], 1), 0, "clicks")
    assert p.status()["state_rows"] == 3  # the views' watermark holds the others
    p.process(rows_of(VIEWS, [("z", 200_000, 1.0)], 101), 0, "views")
    assert p.status()["state_rows"] == 2  # both past 200 s - 1 minute: forgotten
    out = p.process(rows_of(VIEWS, [("a", 200_000, 1.0), ("a", 100, 2.0)], 102), 0, "views")
    assert out.appends is not None and out.appends.num_rows == 0  # the click at 0 is gone
    assert out.late is not None and out.late.to_pylist()[0]["rid"] == 103
    assert out.late.to_pylist()[0]["_stream"] == "views"
    assert out.late.to_pylist()[0]["_reason"] == "behind_watermark"
    assert p.status()["state_rows"] == 3  # only the rows at 200 s are kept


def test_a_join_waits_for_the_slower_stream() -> None:
    sql = f"CREATE PIPELINE j AS {SELECT} FROM clicks c LEFT JOIN views v {INTERVAL_ON}"
    p = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS)
    out = p.process(rows_of(CLICKS, [("a", 0, 1.0), ("a", 500_000, 1.0)], 0), 0, "clicks")
    assert out.appends is not None and out.appends.num_rows == 0  # views has no watermark
    out = p.process(rows_of(VIEWS, [("a", 5_000, 2.0)], 100), 0, "views")
    assert [(r["crid"], r["vrid"]) for r in out.appends.to_pylist()] == [(0, 100)]
    out = p.process(rows_of(VIEWS, [("z", 600_000, 2.0)], 101), 0, "views")
    assert p.status()["watermark_ms"] is not None


@pytest.mark.parametrize(
    ("on", "construct"),
    [
        ("ON c.k = v.k", "join of two streams without a time bound"),
        ("ON c.k = v.k AND c.ts >= v.ts", "join of two streams without a time bound"),
    ],
)
def test_a_join_without_bounds_or_ttl_is_refused(on: str, construct: str) -> None:
    with pytest.raises(UnsupportedSQL) as err:
        Pipeline.from_sql(f"CREATE PIPELINE j AS {SELECT} FROM clicks c JOIN views v {on}",
                          SCHEMAS, streams=STREAMS)  # fmt: skip
    assert err.value.details["construct"] == construct


def test_right_and_full_joins_of_streams_are_refused() -> None:
    with pytest.raises(UnsupportedSQL) as err:
        Pipeline.from_sql(
            f"CREATE PIPELINE j AS {SELECT} FROM clicks c FULL JOIN views v {INTERVAL_ON}",
            SCHEMAS, streams=STREAMS,
        )  # fmt: skip
    assert "FULL" in err.value.details["construct"]


def test_a_self_join_reads_each_batch_once_and_equals_the_batch_join() -> None:
    body = ("SELECT a.rid AS crid, b.rid AS vrid, b.v - a.v AS rise FROM clicks a JOIN clicks b "
            "ON a.k = b.k AND b.ts BETWEEN a.ts + INTERVAL '1 ms' AND a.ts + INTERVAL '30 seconds'")  # fmt: skip
    p = Pipeline.from_sql(f"CREATE PIPELINE s AS {body}", SCHEMAS, streams=STREAMS)
    assert p.inputs == ("clicks",)
    rows = [("a", i * 7_000, float(i % 5)) for i in range(20)] + [("b", 3_000, 1.0)]
    table = rows_of(CLICKS, rows, 0)
    out = StepOutput()
    for start in range(0, table.num_rows, 6):
        out = out.then(p.process(table.slice(start, 6), 0, "clicks"))
    out = out.then(p.finish(0))
    con = duckdb.connect()
    con.register("clicks", table)
    assert sorted_rows(out.appends) == sorted_rows(con.sql(body).to_arrow_table())
    assert p.status()["rows_in"] == table.num_rows
    late = p.process(rows_of(CLICKS, [("a", 0, 1.0)], 99), 0, "clicks").late
    assert late is not None and late["rid"].to_pylist() == [99]  # once, not once per side


def test_the_time_bound_is_the_pair_written_with_intervals() -> None:
    sql = ("CREATE PIPELINE j AS SELECT c.rid AS crid, v.rid AS vrid FROM clicks c JOIN views v "
           "ON c.v BETWEEN v.w - 1 AND v.w + 1 AND c.rid >= v.rid - 5 AND c.rid <= v.rid "
           "AND v.ts BETWEEN c.ts AND c.ts + INTERVAL '5 seconds'")  # fmt: skip
    spec = Pipeline.from_sql(sql, SCHEMAS, streams=STREAMS).plan.stream_join
    assert spec is not None
    assert (spec.left.time_column, spec.right.time_column) == ("ts", "ts")
    assert (spec.lower_ms, spec.upper_ms) == (-5_000, 0)
