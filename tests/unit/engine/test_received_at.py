"""``_received_at``: the arrival time of each row, as a column pipelines can name."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from headwater.engine import Pipeline
from headwater.engine.received import RECEIVED_AT, reading_schema

SCHEMA = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC"))])


def rows(devices: list[str], received_ms: list[int]) -> pa.Table:
    """Stream rows as the log holds them: user fields, then ``_received_ms``."""
    ts = pa.array([0] * len(devices), pa.int64()).cast(SCHEMA.field("ts").type)
    received = pa.array(received_ms, pa.int64())
    return pa.table({"device_id": devices, "ts": ts, "_received_ms": received})


def test_windows_on_received_at_group_rows_by_arrival() -> None:
    sql = (
        "CREATE PIPELINE arrivals AS SELECT device_id, window_start, count(*) AS n "
        "FROM TUMBLE(readings, _received_at, INTERVAL '1 minute') "
        "GROUP BY device_id, window_start, window_end"
    )
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    batches = [rows(["a", "a", "b"], [1_000, 59_999, 30_000]), rows(["a", "b"], [60_000, 125_000])]
    got = []
    for batch in batches:
        out = pipeline.process(batch, now_ms=0)
        got += out.upserts.to_pylist() if out.upserts is not None else []
    out = pipeline.finish(now_ms=0)
    got += out.upserts.to_pylist() if out.upserts is not None else []
    con = duckdb.connect()
    con.register("everything", pa.concat_tables(batches))
    want = con.sql(
        "SELECT device_id, (_received_ms // 60000) * 60000 AS ws, count(*) AS n "
        "FROM everything GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    found = sorted((r["device_id"], int(r["window_start"].timestamp() * 1000), r["n"]) for r in got)
    assert found == want
    assert found[0] == ("a", 0, 2)  # every row event-timed at 0, split by arrival


def test_selecting_received_at_gives_a_utc_timestamp() -> None:
    sql = "CREATE PIPELINE seen AS SELECT device_id, _received_at AS at FROM readings"
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    assert pipeline.output_schema.field("at").type == pa.timestamp("ms", tz="UTC")
    out = pipeline.process(rows(["a"], [1_500]), now_ms=0)
    assert out.appends is not None
    assert out.appends["at"].cast(pa.int64()).to_pylist() == [1_500]


def test_pipelines_that_do_not_name_it_do_not_see_it() -> None:
    pipeline = Pipeline.from_sql("CREATE PIPELINE all_of AS SELECT * FROM readings", SCHEMA)
    assert pipeline.output_schema.names == SCHEMA.names
    assert reading_schema(SCHEMA, pipeline.input_schema) == SCHEMA
    out = pipeline.process(rows(["a"], [1_500]), now_ms=0)
    assert out.appends is not None and out.appends.column_names == SCHEMA.names


def test_a_string_that_spells_it_is_not_a_column() -> None:
    sql = "CREATE PIPELINE s AS SELECT device_id, '_received_at' AS label FROM readings"
    assert RECEIVED_AT not in Pipeline.from_sql(sql, SCHEMA).input_schema.names


@pytest.mark.parametrize("emit", ["final", "changes"])
def test_late_rows_keep_their_arrival_time(emit: str) -> None:
    sql = (
        "CREATE PIPELINE w AS SELECT device_id, window_start, count(*) AS n, "
        "max(_received_at) AS last_seen FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
        f"GROUP BY device_id, window_start, window_end WITH (emit = '{emit}')"
    )
    pipeline = Pipeline.from_sql(sql, SCHEMA)
    assert RECEIVED_AT in pipeline.late_schema.names
    ahead = rows(["a"], [5_000])
    ahead = ahead.set_column(1, "ts", pa.array([600_000], SCHEMA.field("ts").type))
    first = pipeline.process(ahead, now_ms=0)
    if emit == "changes":
        assert first.upserts is not None
        assert first.upserts["last_seen"].cast(pa.int64()).to_pylist() == [5_000]
    out = pipeline.process(rows(["a"], [9_000]), now_ms=0)  # event time 0: closed
    assert out.late is not None
    assert out.late[RECEIVED_AT].cast(pa.int64()).to_pylist() == [9_000]
