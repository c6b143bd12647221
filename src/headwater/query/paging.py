"""How a ``RowQuery`` reads: bounds, filters, sort order and the keyset cursor.

Every store adapter turns a ``RowQuery`` into a ``RowPlan`` here, so all of them
order, filter and page the same way; each then renders the plan in its own terms
(SQL for DuckDB, compute expressions for Arrow).

Paging is keyset paging: a cursor holds the sort values of the last row returned,
and the next page starts strictly after them. Rows appended meanwhile never shift a
page (no OFFSET), and no scan repeats the pages already read.

>>> import pyarrow as pa
>>> from headwater.query.spec import RowQuery
>>> schema = pa.schema([("ts", pa.timestamp("ms", tz="UTC")), ("_offset", pa.int64())])
>>> plan = plan_rows(RowQuery("t1", "readings", time_column="ts", limit=2), schema, (), "rowid")
>>> plan.order_columns
('ts', '_offset')
>>> page = pa.table({"ts": pa.array([5, 9], schema.field("ts").type), "_offset": [0, 1]})
>>> plan_rows(RowQuery("t1", "readings", time_column="ts", cursor=next_cursor(plan, page)),
...           schema, (), "rowid").after[1].as_py()
1
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from headwater.errors import BadRequest
from headwater.query.spec import TIMESTAMP, RowQuery

OFFSET_COLUMN = "_offset"


@dataclass(frozen=True, slots=True)
class RowPlan:
    """A validated ``RowQuery``: every value already has its column's Arrow type."""

    time_column: str | None
    order_columns: tuple[str, ...]  # the time column (if any), then the tiebreakers
    types: tuple[pa.DataType, ...]  # one per order column
    descending: bool
    from_value: pa.Scalar | None
    to_value: pa.Scalar | None
    filters: tuple[tuple[str, pa.Scalar | None], ...]  # None matches NULL
    after: tuple[pa.Scalar, ...] | None  # sort values of the previous page's last row
    limit: int


def plan_rows(
    query: RowQuery, schema: pa.Schema, key: Sequence[str], insertion_column: str
) -> RowPlan:
    """Validate ``query`` against the table and fix its order.

    Tiebreak: ``_offset`` when the table has it, else the table's ``key``, else
    ``insertion_column`` (the adapter's insertion order, an int64).
    """
    if query.limit < 1:
        raise BadRequest(f"limit must be at least 1, not {query.limit}", code="bad_limit")
    tiebreak: tuple[str, ...] = (
        (OFFSET_COLUMN,) if OFFSET_COLUMN in schema.names else tuple(key) or (insertion_column,)
    )
    columns = ((query.time_column,) if query.time_column else ()) + tiebreak
    types = tuple(
        pa.int64() if c == insertion_column else _column(schema, query.table, c).type
        for c in columns
    )
    from_value = to_value = None
    if query.time_column is not None:
        time_type = types[0]
        if not (pa.types.is_timestamp(time_type) or pa.types.is_integer(time_type)):
            raise BadRequest(
                f"time column {query.time_column!r} is {time_type}; use a timestamp or epoch-ms integer column",
                code="bad_time_column",
            )
        from_value = None if query.from_ms is None else _ms_scalar(query.from_ms, time_type)
        to_value = None if query.to_ms is None else _ms_scalar(query.to_ms, time_type)
    filters = tuple(
        (name, _filter_value(name, value, _column(schema, query.table, name).type))
        for name, value in query.filters.items()
    )
    after = None if query.cursor is None else _decode(query, columns, types)
    return RowPlan(
        query.time_column,
        columns,
        types,
        query.order == "desc",
        from_value,
        to_value,
        filters,
        after,
        query.limit,
    )


def next_cursor(plan: RowPlan, page: pa.Table) -> str:
    """The cursor that continues after the last row of ``page`` (which holds the order columns)."""
    last = page.num_rows - 1
    values = [
        _to_json(page.column(c)[last], t)
        for c, t in zip(plan.order_columns, plan.types, strict=True)
    ]
    payload = {"o": "desc" if plan.descending else "asc", "t": plan.time_column, "v": values}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(
    query: RowQuery, columns: tuple[str, ...], types: tuple[pa.DataType, ...]
) -> tuple[pa.Scalar, ...]:
    assert query.cursor is not None
    try:
        raw = base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4))
        payload = json.loads(raw)
        values = payload["v"]
        if (
            payload["o"] != query.order
            or payload["t"] != query.time_column
            or len(values) != len(columns)
        ):
            raise ValueError("cursor of another query")
        return tuple(_from_json(v, t) for v, t in zip(values, types, strict=True))
    except (ValueError, KeyError, TypeError, binascii.Error, pa.ArrowException) as exc:
        raise BadRequest(
            "the cursor does not belong to this query; start again without a cursor",
            code="bad_cursor",
        ) from exc


def _column(schema: pa.Schema, table: str, name: str) -> pa.Field:
    index = schema.get_field_index(name)
    if index < 0:
        raise BadRequest(
            f"table {table!r} has no column {name!r}", code="unknown_column", column=name
        )
    return schema.field(index)


def _ms_scalar(ms: int, t: pa.DataType) -> pa.Scalar:
    if pa.types.is_timestamp(t):
        return pa.scalar(ms, pa.int64()).cast(TIMESTAMP)
    return pa.scalar(ms, t)


def _filter_value(name: str, value: Any, t: pa.DataType) -> pa.Scalar | None:
    if value is None:
        return None
    try:
        if pa.types.is_timestamp(t) and isinstance(value, int) and not isinstance(value, bool):
            return _ms_scalar(value, t)
        return pa.scalar(value).cast(t)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise BadRequest(
            f"filter {name}={value!r} is not a valid {t}", code="bad_filter", column=name
        ) from exc


def _to_json(value: pa.Scalar, t: pa.DataType) -> Any:
    if not value.is_valid:
        return None
    if pa.types.is_timestamp(t):
        return value.cast(TIMESTAMP).cast(pa.int64()).as_py()
    if pa.types.is_date32(t):
        return value.cast(pa.int32()).as_py()
    if pa.types.is_binary(t):
        return value.as_py().hex()
    return value.as_py()


def _from_json(value: Any, t: pa.DataType) -> pa.Scalar:
    if value is None:
        return pa.scalar(None, t)
    if pa.types.is_timestamp(t):
        return pa.scalar(int(value), pa.int64()).cast(t)
    if pa.types.is_date32(t):
        return pa.scalar(int(value), pa.int32()).cast(t)
    if pa.types.is_binary(t):
        return pa.scalar(bytes.fromhex(value), t)
    return pa.scalar(value, t)
