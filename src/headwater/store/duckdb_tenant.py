"""``TenantDatabase``: one tenant's DuckDB database file, its tables and its bookkeeping.

Every tenant has a database of its own (``<data_dir>/store/<tenant>.duckdb``, its own
DuckDB instance). The tenant's tables live in the ``main`` schema under their own
names; the bookkeeping lives in the ``_hw`` schema: ``_hw.tables`` (key and Arrow
schema of each table) and ``_hw.consumers`` (consumer offsets and state). A commit
writes rows, offsets and state in one transaction of this one database, which is what
makes consumers exactly-once. User SQL of the tenant runs on a cursor of this instance:
other tenants' tables are in other instances, so no name can reach them.

Concurrency: every read gets its own cursor (DuckDB's MVCC lets reads run beside a
write). Each write takes a cursor from a small pool and the locks of the tables and the
consumer it touches, so writes of different tables run side by side (DuckDB's
optimistic concurrency sees no conflict between them) and writes of one table take
turns, never conflicting. DDL also goes one at a time.

User SQL cannot touch files: the database runs with ``enable_external_access=false``
(no file, network or extension access for any query) and ``lock_configuration=true``
(no statement can turn it back on). Checkpoints run at ``checkpoint_threshold`` of
WAL (16MB): with large appends written straight to the database file, a checkpoint
after every few batches stays short, where larger thresholds traded that for rare
multi-second stalls and longer WAL replays at restart.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from headwater.errors import BadRequest, Conflict, HeadwaterError, IncompatibleSchema, NotFound
from headwater.observability.metrics import STORE_QUERY_SECONDS
from headwater.query.limits import QueryBudget, QueryLimits
from headwater.query.paging import next_cursor, plan_rows
from headwater.query.runner import connect_locked, run_select
from headwater.query.sandbox import rewrite_select
from headwater.store import duckdb_sql as q
from headwater.store.ports import (
    HIDDEN_COLUMNS,
    ResultWrite,
    RowPage,
    RowQuery,
    cast_values,
    check_rows,
    check_update,
    check_upsert,
    last_per_key,
    merge_schema,
    normalize_rows,
    require_column,
    require_columns,
)

WRITE_VIEW = "_hw_rows"


@dataclass(frozen=True, slots=True)
class _Table:
    schema: pa.Schema
    key: tuple[str, ...]

    @property
    def visible(self) -> list[str]:
        return [n for n in self.schema.names if n not in HIDDEN_COLUMNS]


class TenantDatabase:
    """One tenant's tables, offsets and state in one DuckDB database file."""

    def __init__(
        self, path: Path, *, memory_limit: str, threads: int, checkpoint_threshold: str
    ) -> None:
        self.path = path
        self._db = connect_locked(
            str(path),
            memory_limit=memory_limit,
            threads=threads,
            checkpoint_threshold=checkpoint_threshold,
        )
        self._write_lock = threading.Lock()  # DDL and the catalog, one at a time
        self._locks = _NamedLocks()  # writers of one table or consumer, one at a time
        self._cursor_lock = threading.Lock()
        self._idle: list[duckdb.DuckDBPyConnection] = []  # write cursors not in use
        for ddl in q.CATALOG_DDL:
            self._db.execute(ddl)
        self._tables = self._load_catalog()

    # --- tables ---------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._tables)

    def ensure_table(self, table: str, schema: pa.Schema, key: list[str] | None) -> None:
        with self._write_lock, self._locks.hold([_table_lock(table)]):
            info = self._tables.get(table)
            if info is None:
                info = self._create(table, schema, tuple(key or ()))
            else:
                info = self._evolve(table, info, schema, key)
            # Copy on write: readers iterate the catalog without taking the lock.
            self._tables = {**self._tables, table: info}

    def _create(self, table: str, schema: pa.Schema, key: tuple[str, ...]) -> _Table:
        require_columns(table, schema, key)
        for name in self._tables:
            if name.lower() == table.lower():  # DuckDB resolves names ignoring ASCII case
                raise Conflict(
                    f"table {table!r} clashes with existing table {name!r}; choose another name"
                )
        info = _Table(schema, key)
        self._apply_ddl([q.create_table(table, schema, key)], table, info)
        return info

    def _evolve(self, table: str, info: _Table, schema: pa.Schema, key: list[str] | None) -> _Table:
        if key is not None and tuple(key) != info.key:
            raise IncompatibleSchema(
                f"table {table!r} is keyed by {list(info.key)}; its key cannot become {key}"
            )
        merged = merge_schema(table, info.schema, schema, list(info.key))
        if merged.equals(info.schema):
            return info
        new = _Table(merged, info.key)
        self._apply_ddl(q.evolve_table(table, info.schema, merged), table, new)
        return new

    def _apply_ddl(self, ddl: list[str], table: str, info: _Table) -> None:
        """Run ``ddl`` and record ``info`` in the catalog, in one transaction."""
        row = [table, list(info.key), info.schema.serialize().to_pybytes()]
        with self._transaction() as cur:
            for statement in ddl:
                cur.execute(statement)
            cur.execute(q.SAVE_TABLE, row)

    def drop_table(self, table: str) -> None:
        with self._write_lock, self._locks.hold([_table_lock(table)]):
            if table not in self._tables:
                return
            with self._transaction() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {q.table_ref(table)}")
                cur.execute(q.DROP_TABLE_ROW, [table])
            self._tables = {k: v for k, v in self._tables.items() if k != table}

    def table_schema(self, table: str) -> pa.Schema | None:
        info = self._tables.get(table)
        return None if info is None else info.schema

    # --- writes ---------------------------------------------------------------

    def commit(self, write: ResultWrite) -> tuple[int, int]:
        """Apply every part of ``write`` in one transaction; (appended, upserted) rows."""
        appended = upserted = 0
        names = [_table_lock(t) for t in [*write.appends, *write.upserts, *write.updates]]
        if write.offsets or write.state is not None:
            names.append(f"consumer:{write.consumer}")
        with self._locks.hold(names), self._transaction() as cur:
            # Each part is checked just before it runs: a bad part rolls back the ones before.
            for table, rows in write.appends.items():
                appended += self._append(cur, table, rows)
            for table, (rows, key) in write.upserts.items():
                upserted += self._upsert(cur, table, rows, key)
            for table, (rows, match) in write.updates.items():
                self._update(cur, table, rows, match)
            if write.offsets or write.state is not None:
                self._save_consumer(cur, write)
        return appended, upserted

    def _append(self, cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> int:
        info = self.info(table)
        check_rows(table, info.schema, rows)
        if rows.num_rows:
            self._run_with_rows(cur, q.append(table, WRITE_VIEW), normalize_rows(rows))
        return int(rows.num_rows)

    def _upsert(
        self, cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, key: list[str]
    ) -> int:
        info = self.info(table)
        check_upsert(table, info.key, rows, key)
        check_rows(table, info.schema, rows)
        if rows.num_rows:
            # ON CONFLICT may not touch one row twice per statement: the last row per key wins first.
            rows = last_per_key(normalize_rows(rows), key)
            sql = q.upsert(table, info.schema, rows.column_names, key, WRITE_VIEW)
            self._run_with_rows(cur, sql, rows)
        return int(rows.num_rows)

    def _update(
        self, cur: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, match: list[str]
    ) -> None:
        info = self.info(table)
        check_update(table, info.schema, rows, match)
        if rows.num_rows and len(match) < rows.num_columns:
            rows = last_per_key(normalize_rows(rows), match)
            self._run_with_rows(cur, q.update(table, rows.column_names, match, WRITE_VIEW), rows)

    def _run_with_rows(self, cur: duckdb.DuckDBPyConnection, sql: str, rows: pa.Table) -> None:
        cur.register(WRITE_VIEW, rows)  # an Arrow scan: no copy until DuckDB writes the rows
        try:
            cur.execute(sql)
        finally:
            cur.unregister(WRITE_VIEW)

    def _save_consumer(self, cur: duckdb.DuckDBPyConnection, write: ResultWrite) -> None:
        # Offsets only: the state may be megabytes, and this write replaces it anyway.
        found = cur.execute(q.LOAD_OFFSETS, [write.consumer]).fetchone()
        offsets = {**(json.loads(found[0]) if found else {}), **write.offsets}
        cur.execute(q.SAVE_CONSUMER, [write.consumer, json.dumps(offsets), write.state])

    def delete_before(self, table: str, column: str, before_ms: int) -> int:
        info = self.info(table)
        if column not in info.schema.names or not pa.types.is_integer(
            info.schema.field(column).type
        ):
            raise BadRequest(f"table {table!r} has no integer column {column!r}", code="bad_column")
        sql = f"DELETE FROM {q.table_ref(table)} WHERE {q.quote(column)} < ?"
        with self._locks.hold([_table_lock(table)]), self._transaction() as cur:
            found = cur.execute(sql, [before_ms]).fetchone()
        return int(found[0]) if found else 0

    def delete_in(self, table: str, column: str, values: pa.Array) -> int:
        info = self.info(table)
        name = require_column(table, info.schema, column)
        wanted = pa.table({"v": cast_values(values, info.schema.field(name).type)})
        sql = (
            f"DELETE FROM {q.table_ref(table)} WHERE {q.quote(name)} IN "
            "(SELECT v FROM __hw_erase WHERE v IS NOT NULL)"
        )
        with self._locks.hold([_table_lock(table)]), self._transaction() as cur:
            cur.register("__hw_erase", wanted)
            try:
                found = cur.execute(sql).fetchone()
            finally:
                cur.unregister("__hw_erase")
        return int(found[0]) if found else 0

    @contextmanager
    def _transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._cursor_lock:
            cur = self._idle.pop() if self._idle else self._db.cursor()
        try:
            cur.begin()
            try:
                yield cur
                cur.commit()
            except duckdb.Error as exc:
                cur.rollback()
                raise HeadwaterError(
                    f"the store refused the write: {exc}", code="store_error"
                ) from exc
            except BaseException:
                cur.rollback()
                raise
        finally:
            with self._cursor_lock:
                self._idle.append(cur)

    # --- reads ----------------------------------------------------------------

    def consumer(self, consumer: str) -> tuple[dict[str, int], bytes | None]:
        with self.reading("consumer") as cur:
            found = cur.execute(q.LOAD_CONSUMER, [consumer]).fetchone()
        if found is None:
            return {}, None
        offsets = {str(k): int(v) for k, v in json.loads(found[0]).items()}
        return offsets, None if found[1] is None else bytes(found[1])

    def read_rows(self, query: RowQuery) -> RowPage:
        info = self.info(query.table)
        plan = plan_rows(query, info.schema, info.key, q.ROWID)
        sql, params = q.select_rows(query.table, info.visible, plan)
        with self.reading("rows") as cur:
            found = cur.sql(sql, params=params).to_arrow_table()
        page = found.slice(0, plan.limit)
        cursor = next_cursor(plan, page) if found.num_rows > plan.limit else None
        return RowPage(self.typed(query.table, page.select(info.visible)), cursor)

    def count_rows(self, query: RowQuery) -> int:
        info = self.info(query.table)
        plan = plan_rows(query, info.schema, info.key, q.ROWID)
        where, params = q.where_clause(plan, with_cursor=False)
        with self.reading("count") as cur:
            found = cur.execute(
                f"SELECT count(*) FROM {q.table_ref(query.table)}{where}", params
            ).fetchone()
        return int(found[0]) if found else 0

    def latest_per_key(
        self, table: str, key: list[str], time_column: str, n: int, filters: dict[str, Any]
    ) -> pa.Table:
        info = self.info(table)
        require_columns(table, info.schema, [*key, time_column])
        tiebreak = "_offset" if "_offset" in info.schema.names else q.ROWID
        plan = plan_rows(RowQuery("", table, filters=filters), info.schema, info.key, q.ROWID)
        where, params = q.where_clause(plan, with_cursor=False)
        sql, n_first = q.latest_per_key(table, info.visible, key, time_column, tiebreak, where)
        with self.reading("latest") as cur:
            found = cur.sql(sql, params=[n, *params] if n_first else [*params, n]).to_arrow_table()
        return self.typed(table, found)

    def sql(
        self, query: str, *, max_rows: int, timeout_s: float, budget: QueryBudget | None = None
    ) -> pa.Table:
        """Run a sandboxed SELECT over this tenant's tables (the only ones this database has)."""
        tables = {name: name for name in self._tables}
        # Query caps: parse and run inside one budget (headwater.query.limits).
        budget = budget or QueryBudget.start(QueryLimits.for_server_sql(timeout_s))
        select = budget.parse(
            query,
            lambda sql: rewrite_select(sql, tables, schema="main", transform=budget.transform),
        )
        with self.reading("sql") as cur:
            cur.begin()  # rolled back below: nothing a query does can stick
            try:
                return run_select(
                    cur, select.sql, max_rows=max_rows, timeout_s=timeout_s,
                    names=select.names, budget=budget,
                )  # fmt: skip
            finally:
                cur.rollback()

    def select(self, kind: str, sql: str, params: list[Any]) -> pa.Table:
        """Run one of the store's own reads (never user SQL) and return its rows."""
        with self.reading(kind) as cur:
            return cur.sql(sql, params=params).to_arrow_table()

    def close(self) -> None:
        with self._write_lock, self._cursor_lock:
            for cur in self._idle:
                cur.close()
            self._idle.clear()
            self._db.close()

    # --- helpers --------------------------------------------------------------

    def info(self, table: str) -> _Table:
        info = self._tables.get(table)
        if info is None:
            raise NotFound(f"table {table!r} does not exist", code="unknown_table", table=table)
        return info

    @contextmanager
    def reading(self, kind: str) -> Iterator[duckdb.DuckDBPyConnection]:
        started = time.perf_counter()
        with self._cursor_lock:
            cur = self._db.cursor()
        try:
            yield cur
        except duckdb.Error as exc:
            raise HeadwaterError(f"the store could not answer: {exc}", code="store_error") from exc
        finally:
            cur.close()
            STORE_QUERY_SECONDS.labels(kind).observe(time.perf_counter() - started)

    def typed(self, table: str, rows: pa.Table) -> pa.Table:
        """DuckDB's Arrow types (e.g. timestamp[us]) cast back to the table's own."""
        schema = self.info(table).schema
        return rows.cast(pa.schema([schema.field(n) for n in rows.column_names]), safe=False)

    def _load_catalog(self) -> dict[str, _Table]:
        tables = {}
        for name, key, blob in self._db.execute(q.LOAD_CATALOG).fetchall():
            tables[name] = _Table(pa.ipc.read_schema(pa.py_buffer(blob)), tuple(key))
        return tables


def _table_lock(table: str) -> str:
    return f"table:{table}"


class _NamedLocks:
    """One lock per name, taken in name order (so two holders never wait on each other)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    @contextmanager
    def hold(self, names: list[str]) -> Iterator[None]:
        with self._guard:
            locks = [self._locks.setdefault(n, threading.Lock()) for n in sorted(set(names))]
        taken: list[threading.Lock] = []
        try:
            for lock in locks:
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
