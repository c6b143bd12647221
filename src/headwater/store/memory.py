"""``MemoryStore``: the in-memory ``ResultStore``, for tests and throwaway runs.

Tables are immutable Arrow tables in a dict; a commit builds the next version of every
table it touches and swaps them in under a lock, so a failing part leaves nothing
behind. Reads filter and sort with ``pyarrow.compute``; ``sql`` runs on a fresh
in-memory DuckDB that sees only the tenant's tables the query names.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.errors import BadRequest, Conflict, IncompatibleSchema, NotFound
from headwater.query.limits import QueryBudget, QueryLimits
from headwater.query.paging import RowPlan, next_cursor, plan_rows
from headwater.query.runner import connect_locked, run_select
from headwater.query.sandbox import rewrite_select
from headwater.store.ports import (
    HIDDEN_COLUMNS,
    ResultWrite,
    RowPage,
    RowQuery,
    cast_values,
    check_name,
    check_rows,
    check_update,
    check_upsert,
    last_per_key,
    merge_schema,
    normalize_rows,
    normalize_schema,
    require_column,
    require_columns,
)

POSITION = "__position"  # insertion order, the tiebreak of last resort


@dataclass(frozen=True, slots=True)
class _Table:
    schema: pa.Schema
    key: tuple[str, ...]
    rows: pa.Table  # always exactly ``schema``

    @property
    def visible(self) -> list[str]:
        return [n for n in self.schema.names if n not in HIDDEN_COLUMNS]


_Consumer = tuple[dict[str, int], bytes | None]


class MemoryStore:
    """The ``ResultStore`` port held in memory.

    >>> store = MemoryStore()
    >>> store.ensure_table("acme", "counts", pa.schema([("k", pa.string()), ("n", pa.int64())]), key=["k"])
    >>> rows = pa.table({"k": ["a", "a"], "n": [1, 2]})
    >>> store.commit("acme", ResultWrite("job", {"topic": 2}, upserts={"counts": (rows, ["k"])}))
    >>> store.read_rows(RowQuery("acme", "counts")).rows.to_pylist()
    [{'k': 'a', 'n': 2}]
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], _Table] = {}
        self._consumers: dict[tuple[str, str], _Consumer] = {}

    def ensure_table(
        self, tenant: str, table: str, schema: pa.Schema, key: list[str] | None = None
    ) -> None:
        """Create the table if missing; add columns the schema gained (widening types)."""
        check_name("tenant", tenant)
        check_name("table", table)
        schema = normalize_schema(schema)
        with self._lock:
            info = self._tables.get((tenant, table))
            if info is None:
                require_columns(table, schema, key or [])
                for t, name in self._tables:
                    if t == tenant and name.lower() == table.lower():
                        raise Conflict(
                            f"table {table!r} clashes with existing table {name!r}; choose another name"
                        )
                info = _Table(schema, tuple(key or ()), schema.empty_table())
            else:
                if key is not None and tuple(key) != info.key:
                    raise IncompatibleSchema(
                        f"table {table!r} is keyed by {list(info.key)}; its key cannot become {key}"
                    )
                merged = merge_schema(table, info.schema, schema, list(info.key))
                info = _Table(merged, info.key, _conform(info.rows, merged))
            # Copy on write: readers take a consistent snapshot without the lock.
            self._tables = {**self._tables, (tenant, table): info}

    def drop_table(self, tenant: str, table: str) -> None:
        """Drop the table and its rows; dropping a missing table does nothing."""
        with self._lock:
            self._tables = {k: v for k, v in self._tables.items() if k != (tenant, table)}

    def table_schema(self, tenant: str, table: str) -> pa.Schema | None:
        info = self._tables.get((tenant, table))
        return None if info is None else info.schema

    def commit(self, tenant: str, write: ResultWrite) -> None:
        """Apply every part of ``write`` in one step, or none of it."""
        with self._lock:
            staged: dict[tuple[str, str], _Table] = {}
            for table, rows in write.appends.items():
                info = staged.get((tenant, table)) or self._info(tenant, table)
                check_rows(table, info.schema, rows)
                added = _conform(normalize_rows(rows), info.schema)
                staged[(tenant, table)] = replace(info, rows=pa.concat_tables([info.rows, added]))
            for table, (rows, key) in write.upserts.items():
                info = staged.get((tenant, table)) or self._info(tenant, table)
                check_upsert(table, info.key, rows, key)
                check_rows(table, info.schema, rows)
                staged[(tenant, table)] = replace(
                    info, rows=_upsert(info, normalize_rows(rows), key)
                )
            for table, (rows, match) in write.updates.items():
                info = staged.get((tenant, table)) or self._info(tenant, table)
                check_update(table, info.schema, rows, match)
                staged[(tenant, table)] = replace(
                    info, rows=_update(info, normalize_rows(rows), match)
                )
            if write.offsets or write.state is not None:
                offsets, state = self._consumers.get((tenant, write.consumer), ({}, None))
                new_state = write.state if write.state is not None else state
                self._consumers[(tenant, write.consumer)] = (
                    {**offsets, **write.offsets},
                    new_state,
                )
            self._tables = {**self._tables, **staged}

    def consumer_offsets(self, tenant: str, consumer: str) -> dict[str, int]:
        return dict(self._consumers.get((tenant, consumer), ({}, None))[0])

    def consumer_state(self, tenant: str, consumer: str) -> bytes | None:
        return self._consumers.get((tenant, consumer), ({}, None))[1]

    def committed_offsets(self) -> dict[tuple[str, str], dict[str, int]]:
        return {k: dict(v[0]) for k, v in self._consumers.items()}

    def read_rows(self, query: RowQuery) -> RowPage:
        info = self._info(query.tenant, query.table)
        plan = plan_rows(query, info.schema, info.key, POSITION)
        rows = _with_position(info.rows)
        where = _where(plan, with_cursor=True)
        if where is not None:
            rows = rows.filter(where)
        # NULL event times are the smallest: first ascending, last descending (as in SQL).
        direction, nulls = (
            ("descending", "at_end") if plan.descending else ("ascending", "at_start")
        )
        order = pc.sort_indices(rows, sort_keys=[(c, direction, nulls) for c in plan.order_columns])
        found = rows.take(order[: plan.limit + 1])
        page = found.slice(0, plan.limit)
        cursor = next_cursor(plan, page) if found.num_rows > plan.limit else None
        return RowPage(page.select(info.visible), cursor)

    def count_rows(self, query: RowQuery) -> int:
        info = self._info(query.tenant, query.table)
        where = _where(plan_rows(query, info.schema, info.key, POSITION), with_cursor=False)
        return int(info.rows.num_rows if where is None else info.rows.filter(where).num_rows)

    def latest_per_key(
        self,
        tenant: str,
        table: str,
        key: list[str],
        time_column: str,
        n: int,
        filters: dict[str, Any] | None = None,
    ) -> pa.Table:
        """The latest ``n`` rows of each key by ``time_column``, ordered by key, newest first."""
        info = self._info(tenant, table)
        require_columns(table, info.schema, [*key, time_column])
        rows = _with_position(info.rows)
        plan = plan_rows(
            RowQuery(tenant, table, filters=filters or {}), info.schema, info.key, POSITION
        )
        where = _where(plan, with_cursor=False)
        if where is not None:
            rows = rows.filter(where)
        tiebreak = "_offset" if "_offset" in info.schema.names else POSITION
        newest = [(time_column, "descending", "at_end"), (tiebreak, "descending", "at_end")]
        keys = [(k, "ascending", "at_end") for k in key] + newest
        rows = rows.take(pc.sort_indices(rows, sort_keys=keys))
        return rows.filter(pa.array(_rank_in_group(rows, key) < n)).select(info.visible)

    def id_hashes(self, tenant: str, table: str, since_ms: int | None) -> pa.Array:
        """Every stored ``_id_hash`` of a stream table (rows received at or after ``since_ms``)."""
        info = self._info(tenant, table)
        if "_id_hash" not in info.schema.names:
            return pa.array([], pa.uint64())
        where = pc.field("_id_hash").is_valid()
        if since_ms is not None and "_received_ms" in info.schema.names:
            where = where & (pc.field("_received_ms") >= since_ms)
        return info.rows.filter(where).column("_id_hash").combine_chunks()

    def delete_before(self, tenant: str, table: str, column: str, before_ms: int) -> int:
        """Delete the rows whose int64 ms ``column`` is below ``before_ms``; return how many."""
        info = self._info(tenant, table)
        if column not in info.schema.names or not pa.types.is_integer(
            info.schema.field(column).type
        ):
            raise BadRequest(f"table {table!r} has no integer column {column!r}", code="bad_column")
        with self._lock:
            info = self._info(tenant, table)
            kept = info.rows.filter(pc.field(column).is_null() | (pc.field(column) >= before_ms))
            # Copy on write, as every write here: readers hold consistent snapshots.
            self._tables = {**self._tables, (tenant, table): _Table(info.schema, info.key, kept)}
        return int(info.rows.num_rows - kept.num_rows)

    def delete_in(self, tenant: str, table: str, column: str, values: pa.Array) -> int:
        """Delete the rows whose ``column`` holds one of ``values``; return how many."""
        with self._lock:
            info = self._info(tenant, table)
            col = info.rows.column(require_column(table, info.schema, column))
            wanted = cast_values(values, col.type)
            kept = info.rows.filter(pc.invert(pc.fill_null(pc.is_in(col, wanted), False)))
            self._tables = {**self._tables, (tenant, table): _Table(info.schema, info.key, kept)}
        return int(info.rows.num_rows - kept.num_rows)

    def rows_by_offset(
        self, tenant: str, table: str, start: int, end: int, max_rows: int
    ) -> pa.Table:
        """Rows with ``start <= _offset < end`` in offset order (see ``ResultStore``)."""
        rows = self._info(tenant, table).rows
        found = rows.filter((pc.field("_offset") >= start) & (pc.field("_offset") < end))
        return found.sort_by("_offset").slice(0, max_rows)

    def sql(
        self,
        tenant: str,
        query: str,
        *,
        max_rows: int,
        timeout_s: float,
        budget: QueryBudget | None = None,
    ) -> pa.Table:
        """Run a read-only SELECT that can see only ``tenant``'s tables, by their names."""
        tables = {name: f"t_{name}" for (t, name) in self._tables if t == tenant}
        budget = budget or QueryBudget.start(QueryLimits.for_server_sql(timeout_s))
        select = budget.parse(
            query, lambda sql: rewrite_select(sql, tables, transform=budget.transform)
        )
        db = connect_locked(":memory:", memory_limit="1GB", threads=1)
        try:
            for logical, physical in select.tables.items():
                # only the tables the query names exist
                db.register(physical, self._tables[(tenant, logical)].rows)
            return run_select(
                db,
                select.sql,
                max_rows=max_rows,
                timeout_s=timeout_s,
                names=select.names,
                budget=budget,
            )
        finally:
            db.close()

    def stored_bytes(self, tenant: str) -> int:
        """Bytes of the tenant's rows in memory."""
        return sum(int(info.rows.nbytes) for (t, _), info in self._tables.items() if t == tenant)

    def close(self) -> None:
        with self._lock:
            self._tables = {}
            self._consumers = {}

    def _info(self, tenant: str, table: str) -> _Table:
        info = self._tables.get((tenant, table))
        if info is None:
            raise NotFound(f"table {table!r} does not exist", code="unknown_table", table=table)
        return info


def _conform(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """``rows`` as exactly ``schema``: missing columns NULL, types cast to the column's."""
    columns = []
    for f in schema:
        if f.name in rows.column_names:
            column = rows.column(f.name)
            columns.append(column if column.type == f.type else column.cast(f.type))
        else:
            columns.append(pa.nulls(rows.num_rows, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _upsert(info: _Table, rows: pa.Table, key: list[str]) -> pa.Table:
    new = _conform(last_per_key(rows, key), info.schema)
    kept = info.rows.join(new.select(key), keys=key, join_type="left anti", use_threads=False)
    return pa.concat_tables([_conform(kept, info.schema), new])


def _update(info: _Table, rows: pa.Table, match: list[str]) -> pa.Table:
    """Stored rows with the columns ``rows`` carry replaced where ``match`` columns are equal."""
    if not rows.num_rows or not info.rows.num_rows:
        return info.rows
    hit, new = "__headwater_hit", "__headwater_new_"
    sets = [c for c in rows.column_names if c not in match]
    changes = last_per_key(rows, match)
    changes = changes.cast(
        pa.schema(
            [
                info.schema.field(c) if c in match else f
                for c, f in zip(changes.column_names, changes.schema, strict=True)
            ]
        )
    ).rename_columns([c if c in match else new + c for c in rows.column_names])
    changes = changes.append_column(hit, pa.repeat(pa.scalar(True), changes.num_rows))
    joined = _with_position(info.rows).join(
        changes, keys=match, join_type="left outer", use_threads=False
    )
    joined = joined.sort_by(POSITION)
    found = joined.column(hit).is_valid()
    out = info.rows
    for c in sets:
        i = out.schema.get_field_index(c)
        value = joined.column(new + c).cast(out.schema.field(c).type)
        out = out.set_column(i, c, pc.if_else(found, value, joined.column(c)))
    return out


def _with_position(rows: pa.Table) -> pa.Table:
    return rows.append_column(POSITION, pa.array(np.arange(rows.num_rows, dtype=np.int64)))


def _where(plan: RowPlan, *, with_cursor: bool) -> pc.Expression | None:
    parts: list[pc.Expression] = []
    if plan.time_column is not None:
        t = pc.field(plan.time_column)
        if plan.from_value is not None:
            parts.append(t >= plan.from_value)
        if plan.to_value is not None:
            parts.append(t < plan.to_value)
    for name, value in plan.filters:
        parts.append(pc.field(name).is_null() if value is None else pc.field(name) == value)
    if with_cursor and plan.after is not None:
        parts.append(_after(plan))
    if not parts:
        return None
    where = parts[0]
    for part in parts[1:]:
        where = where & part
    return where


def _after(plan: RowPlan) -> pc.Expression:
    """Rows strictly after the cursor, as ``duckdb_sql._after`` says in SQL."""
    assert plan.after is not None
    cols = [pc.field(c) for c in plan.order_columns]
    values = list(plan.after)
    if plan.time_column is None:
        return _lexicographic(cols, values, plan.descending)
    t, tv = cols[0], values[0]
    rest = _lexicographic(cols[1:], values[1:], plan.descending)
    if not tv.is_valid:
        return t.is_null() & rest if plan.descending else (t.is_null() & rest) | t.is_valid()
    beyond = (t < tv) if plan.descending else (t > tv)
    after = beyond | ((t == tv) & rest)
    return (after | t.is_null()) if plan.descending else after


def _lexicographic(
    cols: list[pc.Expression], values: list[pa.Scalar], descending: bool
) -> pc.Expression:
    head, value = cols[0], values[0]
    beyond = (head < value) if descending else (head > value)
    if len(cols) == 1:
        return beyond
    return beyond | ((head == value) & _lexicographic(cols[1:], values[1:], descending))


def _rank_in_group(rows: pa.Table, key: list[str]) -> np.ndarray:
    """Position of each row within its run of equal keys (rows sorted by key)."""
    n = rows.num_rows
    starts = np.zeros(n, dtype=bool)
    if n:
        starts[0] = True
    for k in key:
        codes = pc.dictionary_encode(rows.column(k).combine_chunks()).indices
        codes_np = np.asarray(pc.fill_null(codes, -1))
        starts[1:] |= codes_np[1:] != codes_np[:-1]
    index = np.arange(n)
    return index - np.maximum.accumulate(np.where(starts, index, 0))
