"""OVER aggregates on event time against DuckDB batch: the same rows, one window query.

Random rows (keys and values with NULLs, ties in event time) arrive out of order within
the watermark delay, cut into random micro-batches, with a snapshot/restore at a random
batch. Rows with equal event times are ordered by arrival in both.
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
    [("rid", pa.int64()), ("k", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
     ("v", pa.int64())]
)  # fmt: skip
DELAY = 5_000
CALLS = "avg(v) OVER {w} AS a, count(*) OVER {w} AS n, max(v) OVER {w} AS hi, sum(v) OVER {w} AS s"


def pipeline_sql(frame: str, partition: str) -> str:
    w = f"(PARTITION BY {partition} ORDER BY ts {frame})"
    return (
        f"CREATE PIPELINE o AS SELECT rid, k, {CALLS.format(w=w)} FROM events "
        f"WHERE v IS DISTINCT FROM 4 WITH (watermark_delay = '{DELAY} ms')"
    )


@st.composite
def inputs(draw: st.DrawFn) -> tuple[pa.Table, list[int]]:
    n = draw(st.integers(1, 60))
    col = lambda s: draw(st.lists(s, min_size=n, max_size=n))  # noqa: E731
    ts = sorted(col(st.integers(0, 100).map(lambda x: x * 1_000)))
    jitter = col(st.integers(0, DELAY // 1_000))  # late by at most the delay: never late
    order = sorted(range(n), key=lambda i: (ts[i] + jitter[i] * 1_000, i))
    table = pa.table(
        {
            "rid": list(range(n)),
            "k": col(st.sampled_from(["a", "b", None])),
            "ts": pa.array([ts[i] for i in range(n)], pa.int64()).cast(SCHEMA.field("ts").type),
            "v": col(st.one_of(st.none(), st.integers(0, 9))),
        },
        schema=SCHEMA,
    ).take(order)
    table = table.set_column(0, "rid", pa.array(range(n), pa.int64()))  # rid = arrival
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=6))))
    return table, [c for c in cuts if 0 < c < n]


@settings(max_examples=examples(40), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(
    data=inputs(),
    frame=st.sampled_from(["ROWS 0 PRECEDING", "ROWS 2 PRECEDING",
                           "ROWS BETWEEN 5 PRECEDING AND CURRENT ROW",
                           "RANGE INTERVAL '3 seconds' PRECEDING",
                           "RANGE BETWEEN INTERVAL '10 seconds' PRECEDING AND CURRENT ROW"]),
    partition=st.sampled_from(["k", "k, v IS NULL"]),
    snapshot_at=st.integers(0, 6),
)  # fmt: skip
def test_over_aggregates_match_duckdb_batch(
    data: tuple[pa.Table, list[int]], frame: str, partition: str, snapshot_at: int
) -> None:
    rows, cuts = data
    pipeline = Pipeline.from_sql(pipeline_sql(frame, partition), SCHEMA)
    got: list[tuple[Any, ...]] = []
    for i, (a, b) in enumerate(itertools.pairwise([0, *cuts, rows.num_rows])):
        if i == snapshot_at:
            restored = Pipeline(pipeline.plan, SCHEMA)
            restored.restore(pipeline.snapshot())
            pipeline = restored
        out = pipeline.process(rows.slice(a, b - a), now_ms=0)
        assert out.late is None
        got += [tuple(r.values()) for r in out.appends.to_pylist()] if out.appends else []
    out = pipeline.finish(now_ms=0)
    got += [tuple(r.values()) for r in out.appends.to_pylist()] if out.appends else []
    con = duckdb.connect()
    con.register("events", rows)
    tie = ", rid" if frame.startswith("ROWS") else ""
    w = f"(PARTITION BY {partition} ORDER BY ts{tie} {frame})"
    want = con.sql(
        f"SELECT rid, k, {CALLS.format(w=w)} FROM events WHERE v IS DISTINCT FROM 4 ORDER BY rid"
    ).fetchall()
    got = sorted(got, key=lambda r: r[0])
    assert [r[:2] + r[3:] for r in got] == [r[:2] + r[3:] for r in want]
    for g, e in zip(got, want, strict=True):
        assert (g[2] is None and e[2] is None) or abs(g[2] - e[2]) < 1e-9


def test_rows_behind_the_watermark_are_late() -> None:
    pipeline = Pipeline.from_sql(pipeline_sql("ROWS 2 PRECEDING", "k"), SCHEMA)
    at = SCHEMA.field("ts").type
    first = pa.table({"rid": [0], "k": ["a"], "ts": pa.array([60_000], at), "v": [1]}, SCHEMA)
    pipeline.process(first, now_ms=0)
    behind = pa.table({"rid": [1], "k": ["a"], "ts": pa.array([1_000], at), "v": [1]}, SCHEMA)
    out = pipeline.process(behind, now_ms=0)
    assert out.late is not None and out.late["_reason"].to_pylist() == ["behind_watermark"]


@pytest.mark.parametrize(
    ("frame", "construct"),
    [
        ("", "without a frame"),
        ("ROWS UNBOUNDED PRECEDING", "this window frame"),
        ("ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING", "this window frame"),
        ("RANGE INTERVAL '1 month' PRECEDING", "INTERVAL '1 month'"),
    ],
)
def test_unbounded_or_future_frames_are_refused(frame: str, construct: str) -> None:
    with pytest.raises(UnsupportedSQL, match=construct):
        Pipeline.from_sql(pipeline_sql(frame, "k"), SCHEMA)
