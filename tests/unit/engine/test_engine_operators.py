from datetime import UTC, datetime

import pyarrow as pa
import pytest

from headwater.engine import InMemoryReferenceTables, Pipeline
from headwater.errors import Conflict, NotFound
from headwater.model.time import ManualClock

SCHEMA = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("temperature", pa.float64()),
        ("status", pa.string()),
        ("event_id", pa.string()),
    ]
)
MINUTE = 60_000


def rows(*items: tuple) -> pa.Table:
    cols = list(zip(*items, strict=True))
    return pa.table(
        {
            "device_id": list(cols[0]),
            "ts": pa.array(list(cols[1]), pa.int64()).cast(SCHEMA.field("ts").type),
            "temperature": list(cols[2]),
            "status": list(cols[3]),
            "event_id": list(cols[4]),
        },
        schema=SCHEMA,
    )


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def test_row_errors_are_isolated_and_the_rest_proceeds() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, CAST(status AS INT) AS code FROM readings "
        "WHERE temperature > 0",
        SCHEMA,
    )
    batch = rows(
        ("a", 1, 1.0, "1", "e1"),
        ("b", 2, 1.0, "oops", "e2"),
        ("c", 3, -1.0, "never evaluated", "e3"),
        ("d", 4, 1.0, "4", "e4"),
        ("e", 5, 1.0, "bad", "e5"),
    )
    out = p.process(batch.to_batches()[0], now_ms=0)
    assert out.appends is not None and out.errors is not None
    assert out.appends.to_pylist() == [
        {"device_id": "a", "code": 1},
        {"device_id": "d", "code": 4},
    ]
    assert out.errors.column_names == [*SCHEMA.names, "_error"]
    assert out.errors["device_id"].to_pylist() == ["b", "e"]
    assert "Could not convert string 'oops'" in out.errors["_error"][0].as_py()
    assert p.status()["error_rows"] == 2


def test_reference_table_updates_are_seen_on_the_next_batch() -> None:
    refs = InMemoryReferenceTables({"devices": pa.table({"device_id": ["a"], "site": ["north"]})})
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT r.device_id, d.site FROM readings r "
        "LEFT JOIN devices d ON r.device_id = d.device_id",
        SCHEMA,
        refs,
    )
    batch = rows(("a", 1, 1.0, "ok", "e1"), ("b", 2, 1.0, "ok", "e2"))
    first = p.process(batch, 0).appends
    assert first is not None and first["site"].to_pylist() == ["north", None]
    refs.put("devices", pa.table({"device_id": ["a", "b"], "site": ["south", "east"]}))
    second = p.process(batch, 1).appends
    assert second is not None and second["site"].to_pylist() == ["south", "east"]
    with pytest.raises(NotFound):
        Pipeline.from_sql(
            "CREATE PIPELINE q AS SELECT * FROM readings JOIN sites USING (device_id)", SCHEMA, refs
        )


def test_enrichment_before_aggregation() -> None:
    refs = InMemoryReferenceTables(
        {"devices": pa.table({"device_id": ["a", "b"], "site": ["north", "north"]})}
    )
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT d.site, window_start, count(*) AS n "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') r JOIN devices d USING (device_id) "
        "GROUP BY d.site, window_start",
        SCHEMA,
        refs,
    )
    p.process(rows(("a", 1, 1.0, "ok", "e1"), ("b", 2, 1.0, "ok", "e2"), ("z", 3, 1, "ok", "e")), 0)
    out = p.finish(1).upserts
    assert out is not None and out.to_pylist() == [{"site": "north", "window_start": at(0), "n": 2}]


def test_dedup_first_row_passes_until_the_horizon() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT event_id, ts FROM DEDUP(readings, event_id, ts, INTERVAL '1 minute')",
        SCHEMA,
    )
    first = p.process(
        rows(("a", 0, 1.0, "ok", "e1"), ("a", 10, 1.0, "ok", "e1"), ("a", 5, 1, "ok", None)), 0
    )
    assert first.appends is not None and first.appends["event_id"].to_pylist() == ["e1", None]
    again = p.process(rows(("a", 30_000, 1.0, "ok", "e1"), ("a", 200_000, 1.0, "ok", "e2")), 1)
    assert again.appends is not None and again.appends["event_id"].to_pylist() == ["e2"]
    # the watermark (200 s) passed e1's time + horizon: e1 is forgotten; a row that old is late
    after = p.process(rows(("a", 150_000, 1.0, "ok", "e1"), ("a", 100_000, 1.0, "ok", "e3")), 2)
    assert after.appends is not None and after.appends["event_id"].to_pylist() == ["e1"]
    assert after.late is not None and after.late["_reason"].to_pylist() == ["behind_dedup_horizon"]
    status = p.status()
    assert status["dropped_duplicates"] == 2 and status["late_rows"] == 1
    restored = Pipeline(p.plan, SCHEMA)
    restored.restore(p.snapshot())
    dup = restored.process(rows(("a", 150_001, 1.0, "ok", "e1")), 3)
    assert dup.appends is not None and dup.appends.num_rows == 0


def test_dedup_before_windows_counts_each_id_once() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT window_start, count(*) AS n FROM TUMBLE("
        "DEDUP(readings, event_id, ts, INTERVAL '1 hour'), ts, INTERVAL '1 minute') "
        "GROUP BY window_start",
        SCHEMA,
    )
    p.process(rows(("a", 1, 1.0, "ok", "e1"), ("a", 2, 1.0, "ok", "e2")), 0)
    p.process(rows(("a", 1, 1.0, "ok", "e1"), ("a", 3, 1.0, "ok", "e3")), 1)
    out = p.finish(2).upserts
    assert out is not None and out["n"].to_pylist() == [3]


def test_sessions_bridge_across_batches() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, window_end, count(*) AS n, "
        "arg_max(status, ts) AS last_status FROM SESSION(readings, ts, INTERVAL '10 seconds') "
        "GROUP BY device_id, window_start, window_end WITH (watermark_delay = '1 minute')",
        SCHEMA,
    )
    p.process(
        rows(("a", 0, 1.0, "s0", "e"), ("a", 18_000, 1.0, "s1", "e"), ("b", 9_000, 1, "x", "e")), 0
    )
    assert p.status()["open_windows"] == 3
    p.process(rows(("a", 9_000, 1.0, "bridge", "e")), 1)
    assert p.status()["open_windows"] == 2
    out = p.finish(2).upserts
    assert out is not None
    assert sorted(out.to_pylist(), key=lambda r: r["device_id"]) == [
        {
            "device_id": "a",
            "window_start": at(0),
            "window_end": at(28_000),
            "n": 3,
            "last_status": "s1",
        },
        {
            "device_id": "b",
            "window_start": at(9_000),
            "window_end": at(19_000),
            "n": 1,
            "last_status": "x",
        },
    ]


SESSION_SQL = (
    "CREATE PIPELINE p AS SELECT device_id, window_start, window_end, count(*) AS n "
    "FROM SESSION(readings, ts, INTERVAL '30 seconds') GROUP BY device_id, window_start, "
    "window_end"
)


def test_a_session_takes_an_event_exactly_a_gap_after_its_last() -> None:
    p = Pipeline.from_sql(SESSION_SQL, SCHEMA)
    steps = [
        p.process(rows(("a", 0, 1.0, "ok", "e"), ("b", 0, 1.0, "ok", "e")), 0),
        p.process(rows(("a", 30_000, 1.0, "ok", "e"), ("b", 30_001, 1.0, "ok", "e")), 1),
        p.finish(2),
    ]
    out = [r for step in steps if step.upserts is not None for r in step.upserts.to_pylist()]
    got = sorted((r["device_id"], r["window_start"], r["window_end"], r["n"]) for r in out)
    assert got == [
        ("a", at(0), at(60_000), 2),
        ("b", at(0), at(30_000), 1),
        ("b", at(30_001), at(60_001), 1),
    ]


def test_a_session_stays_open_while_an_event_at_its_end_can_still_join() -> None:
    """The watermark at last + gap does not close the session: an event at last + gap is
    not late, and it joins."""
    p = Pipeline.from_sql(SESSION_SQL, SCHEMA)
    p.process(rows(("a", 0, 1.0, "ok", "e")), 0)
    assert p.process(rows(("z", 30_000, 1.0, "ok", "e")), 1).upserts is None  # watermark 30 s
    joined = p.process(rows(("a", 30_000, 1.0, "ok", "e")), 2)
    assert joined.late is None or joined.late.num_rows == 0
    closed = p.process(rows(("z", 60_001, 1.0, "ok", "e")), 3).upserts
    assert closed is not None
    assert sorted((r["device_id"], r["n"]) for r in closed.to_pylist()) == [("a", 2), ("z", 1)]


def test_idle_timeout_closes_the_last_window_with_a_manual_clock() -> None:
    clock = ManualClock(1_000_000)
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, count(*) AS n "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY device_id, window_start "
        "WITH (watermark_delay = '5 seconds', idle_timeout = '30 seconds')",
        SCHEMA,
    )
    out = p.process(rows(("a", 50_000, 1.0, "ok", "e")), clock.now_ms())
    assert out.upserts is None
    clock.advance(29_000)
    assert p.on_time(clock.now_ms()).upserts is None
    clock.advance(1_000)  # idle: watermark 45 s + 30 s = 75 s >= window end 60 s
    closed = p.on_time(clock.now_ms()).upserts
    assert closed is not None and closed.to_pylist() == [
        {"device_id": "a", "window_start": at(0), "n": 1}
    ]
    assert p.status()["watermark_ms"] == 75_000


def test_status_and_null_event_times() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, max(temperature) AS hi "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY device_id, window_start "
        "WITH (allowed_lateness = '1 minute')",
        SCHEMA,
    )
    batch = rows(("a", 1_000, 1.0, "ok", "e"), ("b", 61_000, 2.0, "ok", "e"))
    batch = batch.set_column(
        1, "ts", pa.array([1_000, None], pa.int64()).cast(SCHEMA.field("ts").type)
    )
    out = p.process(batch, 0)
    assert out.errors is not None and out.errors["_error"].to_pylist() == ["event time ts is NULL"]
    status = p.status()
    assert status["watermark_ms"] == 1_000
    assert status["open_windows"] == 1
    assert status["oldest_open_window_end_ms"] == MINUTE
    assert status["state_rows"] == 1 and status["state_bytes"] > 0
    assert status["rows_in"] == 2 and status["error_rows"] == 1


def test_post_aggregation_errors_become_error_rows() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, "
        "CAST(max(status) AS INT) AS code FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
        "GROUP BY device_id, window_start",
        SCHEMA,
    )
    p.process(rows(("a", 1, 1.0, "7", "e"), ("b", 2, 1.0, "seven", "e")), 0)
    out = p.finish(1)
    assert out.upserts is not None and out.upserts["code"].to_pylist() == [7]
    assert out.errors is not None
    assert out.errors["_error"][0].as_py().startswith("result row device_id=b, window_start=1970")
    assert "seven" in out.errors["_error"][0].as_py()


def test_late_rows_keep_their_columns_and_window() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, count(*) AS n "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY device_id, window_start",
        SCHEMA,
    )
    p.process(rows(("a", 130_000, 1.0, "ok", "e1")), 0)
    out = p.process(rows(("a", 61_000, 5.0, "ok", "e2")), 1)
    assert out.late is not None
    assert out.late.schema == p.late_schema
    assert out.late.to_pylist() == [
        {
            "device_id": "a",
            "ts": at(61_000),
            "temperature": 5.0,
            "status": "ok",
            "event_id": "e2",
            "_window_start": at(60_000),
            "_reason": "window_closed",
        }
    ]


def test_restore_refuses_state_of_another_definition() -> None:
    sql = "CREATE PIPELINE p AS SELECT device_id FROM readings"
    state = Pipeline.from_sql(sql, SCHEMA).snapshot()
    other = Pipeline.from_sql(sql.replace("device_id", "event_id"), SCHEMA)
    with pytest.raises(Conflict):
        other.restore(state)


def test_having_filters_final_windows() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, count(*) AS n "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY device_id, window_start "
        "HAVING count(*) > 1 AND max(temperature) < 10",
        SCHEMA,
    )
    p.process(rows(("a", 1, 1.0, "ok", "e"), ("a", 2, 1.0, "ok", "e"), ("b", 3, 1.0, "ok", "e")), 0)
    p.process(rows(("c", 4, 50.0, "ok", "e"), ("c", 5, 1.0, "ok", "e")), 1)
    out = p.finish(2).upserts
    assert out is not None and out.to_pylist() == [
        {"device_id": "a", "window_start": at(0), "n": 2}
    ]


def test_empty_batches_are_harmless() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT window_start, count(*) AS n "
        "FROM HOP(readings, ts, INTERVAL '20 seconds', INTERVAL '1 minute') GROUP BY window_start "
        "WITH (emit = 'changes')",
        SCHEMA,
    )
    empty = SCHEMA.empty_table()
    assert p.process(empty, 0).upserts is None
    changed = p.process(rows(("a", 5, 1.0, "ok", "e")), 1).upserts
    assert changed is not None and changed.num_rows == 3
    assert p.process(empty, 2).upserts is None
    assert p.status()["watermark_ms"] == 5


def test_steps_combine_with_later_upserts_winning() -> None:
    p = Pipeline.from_sql(
        "CREATE PIPELINE p AS SELECT device_id, window_start, count(*) AS n "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY device_id, window_start "
        "WITH (emit = 'changes')",
        SCHEMA,
    )
    first = p.process(rows(("a", 1, 1.0, "ok", "e"), ("b", 2, 1.0, "ok", "e")), 0)
    second = p.process(rows(("a", 3, 1.0, "ok", "e")), 1)
    both = first.then(second, key=p.output_key)
    assert both.upserts is not None
    assert sorted((r["device_id"], r["n"]) for r in both.upserts.to_pylist()) == [
        ("a", 2),
        ("b", 1),
    ]
