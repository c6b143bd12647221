"""Keyset cursors: what they encode and what they refuse."""

from __future__ import annotations

import pyarrow as pa
import pytest

from headwater.errors import BadRequest
from headwater.query.paging import next_cursor, plan_rows
from headwater.store.ports import RowQuery

TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([("k", pa.string()), ("ws", TS), ("n", pa.int64()), ("ts", TS)])


def test_tiebreak_prefers_offset_then_key_then_insertion_order() -> None:
    with_offset = SCHEMA.append(pa.field("_offset", pa.int64()))
    assert plan_rows(RowQuery("t", "x", "ts"), with_offset, ["k"], "rowid").order_columns == (
        "ts",
        "_offset",
    )
    assert plan_rows(RowQuery("t", "x", "ts"), SCHEMA, ["k", "ws"], "rowid").order_columns == (
        "ts",
        "k",
        "ws",
    )
    assert plan_rows(RowQuery("t", "x"), SCHEMA, [], "rowid").order_columns == ("rowid",)


def test_a_cursor_round_trips_timestamps_strings_and_nulls() -> None:
    plan = plan_rows(RowQuery("t", "x", "ts"), SCHEMA, ["k", "ws"], "rowid")
    page = pa.table({"ts": pa.array([None], TS), "k": ['a"b'], "ws": pa.array([60_000], TS)})
    after = plan_rows(
        RowQuery("t", "x", "ts", cursor=next_cursor(plan, page)), SCHEMA, ["k", "ws"], "rowid"
    ).after
    assert after is not None
    assert [v.as_py() for v in after][:2] == [None, 'a"b']
    assert after[2].cast(pa.int64()).as_py() == 60_000


@pytest.mark.parametrize(
    "change", [{"order": "desc"}, {"time_column": "ws"}, {"time_column": None}]
)
def test_a_cursor_refuses_another_query(change: dict[str, object]) -> None:
    plan = plan_rows(RowQuery("t", "x", "ts"), SCHEMA, ["k"], "rowid")
    cursor = next_cursor(plan, pa.table({"ts": pa.array([1], TS), "k": ["a"]}))
    query = RowQuery("t", "x", **{"time_column": "ts", "cursor": cursor, **change})  # type: ignore[arg-type]
    with pytest.raises(BadRequest) as err:
        plan_rows(query, SCHEMA, ["k"], "rowid")
    assert err.value.code == "bad_cursor"


@pytest.mark.parametrize("cursor", ["", "%%%", "eyJ4IjoxfQ", "bnVsbA"])
def test_garbage_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(BadRequest) as err:
        plan_rows(RowQuery("t", "x", "ts", cursor=cursor or "=="), SCHEMA, ["k"], "rowid")
    assert err.value.code == "bad_cursor"


def test_bounds_and_filters_take_the_column_types() -> None:
    plan = plan_rows(
        RowQuery("t", "x", "ts", from_ms=5, to_ms=9, filters={"n": "7", "ws": 60_000, "k": None}),
        SCHEMA, ["k"], "rowid",
    )  # fmt: skip
    assert plan.from_value is not None and plan.from_value.type == TS
    assert dict(plan.filters)["n"] == pa.scalar(7, pa.int64())
    assert dict(plan.filters)["ws"] == pa.scalar(60_000, pa.int64()).cast(TS)
    assert dict(plan.filters)["k"] is None
