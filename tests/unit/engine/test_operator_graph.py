"""The operator graph: node kinds, watermarks forwarded, state saved per node and state
saved by the version before the graph (``op0, op1...``) restored."""

from __future__ import annotations

import pyarrow as pa

from headwater.engine import Pipeline, StepOutput
from headwater.engine.graph import OperatorKind
from headwater.engine.state import pack, unpack

T = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([("id", pa.string()), ("k", pa.string()), ("ts", T), ("v", pa.float64())])
SQL = ("CREATE PIPELINE m AS SELECT k, window_start, count(*) AS n, sum(v) AS s "
       "FROM TUMBLE(DEDUP(events, id, ts, INTERVAL '1 hour'), ts, INTERVAL '1 minute') "
       "GROUP BY k, window_start, window_end")  # fmt: skip


def batch(rows: list[tuple[str, str, int, float]]) -> pa.Table:
    ids, keys, ts, vs = zip(*rows, strict=True)
    return pa.table({"id": ids, "k": keys, "ts": pa.array(ts, T), "v": vs}, schema=SCHEMA)


FIRST = batch([("1", "a", 1_000, 1.0), ("2", "a", 2_000, 2.0), ("2", "a", 2_000, 2.0)])
SECOND = batch([("3", "b", 61_000, 3.0), ("1", "a", 3_000, 9.0), ("4", "a", 130_000, 1.0)])


def results(out: StepOutput) -> list[dict]:
    return sorted(out.upserts.to_pylist(), key=lambda r: (r["k"], r["window_start"]))


def test_a_single_stream_pipeline_is_a_chain_of_kinds() -> None:
    p = Pipeline.from_sql(SQL, SCHEMA)
    kinds = [n.op.kind for n in p.graph.nodes]
    assert kinds == [OperatorKind.SOURCE, OperatorKind.DEDUP, OperatorKind.WINDOW_AGGREGATE]
    p.process(FIRST, 0)
    statuses = {n.name: st for n, st in p.graph.statuses()}
    assert statuses["dedup"].dropped_duplicates == 1 and statuses["source"].rows_in == 3
    assert statuses["main"].kind is OperatorKind.WINDOW_AGGREGATE
    assert p.status()["dropped_duplicates"] == 1 and p.status()["rows_in"] == 3


def test_state_saved_before_the_graph_restores() -> None:
    whole = Pipeline.from_sql(SQL, SCHEMA)
    want = results(whole.process(FIRST, 0).then(whole.process(SECOND, 0)))
    p = Pipeline.from_sql(SQL, SCHEMA)
    p.process(FIRST, 0)
    meta, tables = unpack(p.snapshot())
    assert meta["version"] == 2 and meta["nodes"] == ["source", "dedup", "main"]
    old = pack({"version": 1, "sql": SQL}, {"op0": tables["dedup"], "op1": tables["main"]})
    again = Pipeline.from_sql(SQL, SCHEMA)
    again.restore(old)
    assert results(again.process(SECOND, 0)) == want
    assert again.status()["dropped_duplicates"] == 2  # the restored count, plus id 1 again


def test_a_join_graph_forwards_the_smaller_watermark() -> None:
    sql = ("CREATE PIPELINE j AS SELECT a.k, a.v AS av, b.v AS bv FROM events a JOIN other b "
           "ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '1 minute' AND b.ts")  # fmt: skip
    p = Pipeline.from_sql(sql, {"events": SCHEMA, "other": SCHEMA}, streams=["events", "other"])
    kinds = [n.op.kind for n in p.graph.nodes]
    assert kinds == [OperatorKind.SOURCE, OperatorKind.SOURCE, OperatorKind.INTERVAL_JOIN,
                     OperatorKind.FILTER_PROJECT]  # fmt: skip
    p.process(FIRST, 0, "events")
    assert p.graph.by_name["join"].op.watermark_ms() is None  # "other" has none yet
    p.process(batch([("9", "a", 40_000, 5.0)]), 0, "other")
    assert p.graph.by_name["join"].op.watermark_ms() == 1_000  # the oldest row it keeps
    p.process(batch([("8", "z", 500_000, 5.0)]), 0, "events")
    p.process(batch([("7", "z", 900_000, 5.0)]), 0, "other")
    assert p.graph.by_name["join"].op.watermark_ms() == 500_000
