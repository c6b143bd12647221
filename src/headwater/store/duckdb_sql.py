"""The SQL text the DuckDB store runs: types, catalog, DDL, writes and row reads.

Everything here is a pure function of names, schemas and plans, so the statements can
be read (and tested) apart from the connection handling in ``duckdb_tenant.py``. Values always
travel as bound parameters; only identifiers are spliced in, and always quoted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from headwater.query.paging import RowPlan

ROWID = "rowid"  # DuckDB's insertion-order pseudo column, the tiebreak of last resort

SCHEMA = "_hw"  # the store's own bookkeeping; user SQL may never name it

CATALOG_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.tables (
        name VARCHAR PRIMARY KEY, key_columns VARCHAR[] NOT NULL, arrow_schema BLOB NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.consumers (
        consumer VARCHAR PRIMARY KEY, offsets VARCHAR NOT NULL, state BLOB)""",
)
LOAD_CATALOG = f"SELECT name, key_columns, arrow_schema FROM {SCHEMA}.tables"
SAVE_TABLE = f"INSERT OR REPLACE INTO {SCHEMA}.tables VALUES (?, ?, ?)"
DROP_TABLE_ROW = f"DELETE FROM {SCHEMA}.tables WHERE name = ?"
LOAD_CONSUMER = f"SELECT offsets, state FROM {SCHEMA}.consumers WHERE consumer = ?"
LOAD_OFFSETS = f"SELECT offsets FROM {SCHEMA}.consumers WHERE consumer = ?"
SAVE_CONSUMER = f"""INSERT INTO {SCHEMA}.consumers VALUES (?, ?, ?)
    ON CONFLICT (consumer) DO UPDATE
    SET offsets = EXCLUDED.offsets, state = COALESCE(EXCLUDED.state, state)"""
LOAD_ALL_OFFSETS = f"SELECT consumer, offsets FROM {SCHEMA}.consumers"


def table_ref(name: str) -> str:
    """A tenant table, qualified by its schema: a CTE of the same name can never shadow it."""
    return "main." + quote(name)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_ref(name: str) -> str:
    return ROWID if name == ROWID else quote(name)


def duck_type(t: pa.DataType) -> str:
    """The DuckDB column type of an Arrow type (the store's normalized types only)."""
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ"  # an instant: reads come back in UTC whatever the session zone
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    if pa.types.is_integer(t):
        names = {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}
        return ("U" if pa.types.is_unsigned_integer(t) else "") + names[t.bit_width]
    simple = {
        pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.float32(): "FLOAT",
        pa.bool_(): "BOOLEAN", pa.date32(): "DATE", pa.binary(): "BLOB",
    }  # fmt: skip
    return simple[t]


def create_table(physical: str, schema: pa.Schema, key: Sequence[str]) -> str:
    columns = [f"{quote(f.name)} {duck_type(f.type)}" for f in schema]
    if key:
        # The primary key gives upserts their ON CONFLICT target (an ART index lookup per row).
        columns.append(f"PRIMARY KEY ({', '.join(map(quote, key))})")
    return f"CREATE TABLE {table_ref(physical)} ({', '.join(columns)})"


def evolve_table(physical: str, old: pa.Schema, new: pa.Schema) -> list[str]:
    """ADD COLUMN for new columns, SET DATA TYPE for widened ones."""
    statements = []
    for f in new:
        if f.name not in old.names:
            statements.append(
                f"ALTER TABLE {table_ref(physical)} ADD COLUMN {quote(f.name)} {duck_type(f.type)}"
            )
        elif old.field(f.name).type != f.type:
            statements.append(
                f"ALTER TABLE {table_ref(physical)} ALTER COLUMN {quote(f.name)} SET DATA TYPE {duck_type(f.type)}"
            )
    return statements


def append(physical: str, view: str) -> str:
    # BY NAME: the batch may hold a subset of the columns, in any order; the rest are NULL.
    return f"INSERT INTO {table_ref(physical)} BY NAME SELECT * FROM {quote(view)}"


def upsert(
    physical: str, schema: pa.Schema, present: Sequence[str], key: Sequence[str], view: str
) -> str:
    """Insert rows; a row whose key exists replaces the stored row entirely."""
    names = [f.name for f in schema]
    values = [
        quote(n) if n in present else f"NULL::{duck_type(schema.field(n).type)}" for n in names
    ]
    head = (
        f"INSERT INTO {table_ref(physical)} ({', '.join(map(quote, names))}) "
        f"SELECT {', '.join(values)} FROM {quote(view)} ON CONFLICT ({', '.join(map(quote, key))}) "
    )
    rest = [n for n in names if n not in key]
    if not rest:
        return head + "DO NOTHING"
    return head + "DO UPDATE SET " + ", ".join(f"{quote(n)} = EXCLUDED.{quote(n)}" for n in rest)


def update(physical: str, present: Sequence[str], match: Sequence[str], view: str) -> str:
    """Set the columns a row carries on the stored rows whose ``match`` columns equal its own."""
    sets = ", ".join(f"{quote(n)} = u.{quote(n)}" for n in present if n not in match)
    on = " AND ".join(f"{quote(physical)}.{quote(n)} = u.{quote(n)}" for n in match)
    return f"UPDATE {quote(physical)} SET {sets} FROM {quote(view)} AS u WHERE {on}"


def select_rows(physical: str, columns: Sequence[str], plan: RowPlan) -> tuple[str, list[Any]]:
    """One page of rows: the plan's bounds, filters and cursor, ordered, limit + 1 rows."""
    extra = [ROWID] if ROWID in plan.order_columns else []
    where, params = where_clause(plan, with_cursor=True)
    direction = "DESC" if plan.descending else "ASC"
    order = []
    for i, c in enumerate(plan.order_columns):
        # NULL event times sort first ascending, last descending (they are the smallest).
        nulls = (
            (" NULLS LAST" if plan.descending else " NULLS FIRST")
            if i == 0 and plan.time_column
            else ""
        )
        order.append(f"{column_ref(c)} {direction}{nulls}")
    sql = (
        f"SELECT {', '.join([*map(quote, columns), *extra])} FROM {table_ref(physical)}{where} "
        f"ORDER BY {', '.join(order)} LIMIT ?"
    )
    return sql, [*params, plan.limit + 1]


def where_clause(plan: RowPlan, *, with_cursor: bool) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    if plan.time_column is not None:
        t = quote(plan.time_column)
        if plan.from_value is not None:
            parts.append(f"{t} >= ?")
            params.append(plan.from_value.as_py())
        if plan.to_value is not None:
            parts.append(f"{t} < ?")
            params.append(plan.to_value.as_py())
    for name, value in plan.filters:
        if value is None:
            parts.append(f"{quote(name)} IS NULL")
        else:
            parts.append(f"{quote(name)} = ?")
            params.append(value.as_py())
    if with_cursor and plan.after is not None:
        sql, more = _after(plan)
        parts.append(sql)
        params.extend(more)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _after(plan: RowPlan) -> tuple[str, list[Any]]:
    """Rows strictly after the cursor in the plan's order (keyset condition)."""
    assert plan.after is not None
    cols = [column_ref(c) for c in plan.order_columns]
    values = [v.as_py() for v in plan.after]
    op = "<" if plan.descending else ">"
    if plan.time_column is None:
        return _lexicographic(cols, values, op)
    t, tv = cols[0], values[0]
    rest, rest_params = _lexicographic(cols[1:], values[1:], op)
    if tv is None:  # still among the NULL event times
        if plan.descending:
            return f"({t} IS NULL AND {rest})", rest_params
        return f"(({t} IS NULL AND {rest}) OR {t} IS NOT NULL)", rest_params
    # The leading range term lets DuckDB skip row groups by their min/max (zonemaps).
    sql = f"({t} {op}= ? AND ({t} {op} ? OR {rest}))"
    bounded = plan.from_value is not None or plan.to_value is not None
    if plan.descending and not bounded:
        sql = f"({sql} OR {t} IS NULL)"
    return sql, [tv, tv, *rest_params]


def _lexicographic(cols: list[str], values: list[Any], op: str) -> tuple[str, list[Any]]:
    head, value = cols[0], values[0]
    if len(cols) == 1:
        return f"{head} {op} ?", [value]
    rest, params = _lexicographic(cols[1:], values[1:], op)
    return f"({head} {op} ? OR ({head} = ? AND {rest}))", [value, value, *params]


def latest_per_key(
    physical: str,
    columns: Sequence[str],
    key: Sequence[str],
    time_column: str,
    tiebreak: str,
    where: str = "",
) -> tuple[str, bool]:
    """The latest-n-per-key query, and whether its ``n`` parameter comes before the filters'.

    With an ``_offset`` tiebreak, ``max_by(row, (time, _offset), n)`` per key: a hash
    aggregate, 2-3x faster than ranking every row with a window function (which is
    kept for tables ordered by ``rowid``, a column a row struct does not hold).
    """
    keys = ", ".join(map(quote, key))
    newest = f"{quote(time_column)} DESC NULLS LAST, {column_ref(tiebreak)} DESC"
    cols = ", ".join(map(quote, columns))
    if tiebreak != ROWID:
        t = quote(time_column)
        rank = f"({t} IS NOT NULL, {t}, {quote(tiebreak)})"  # a NULL time ranks last
        latest = (
            f"SELECT unnest(max_by(_row, {rank}, ?)) AS _r FROM {table_ref(physical)} AS _row"
            f"{where} GROUP BY {keys}"
        )
        flat = f"SELECT unnest(_r, recursive := true) FROM ({latest})"
        return f"SELECT {cols} FROM ({flat}) ORDER BY {keys}, {newest}", True
    return (
        f"SELECT {cols} FROM {table_ref(physical)}{where} "
        f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {newest}) <= ? "
        f"ORDER BY {keys}, {newest}"
    ), False
