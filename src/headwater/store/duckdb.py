"""``DuckDBStore``: the embedded serving store, one DuckDB database file.

Concurrency: one database instance; every read gets its own cursor (DuckDB's MVCC
lets reads run beside a write). Each write takes a cursor from a small pool and the
locks of the tables and the consumer it touches, so writes of different tables run
side by side (DuckDB's optimistic concurrency sees no conflict between them) and
writes of one table take turns, never conflicting. DDL also goes one at a time.

Each tenant's table ``name`` is the physical table ``"t_{tenant}__{name}"``; the
internal table ``_hw_tables`` maps logical names to physical ones with their key and
Arrow schema, and ``_hw_consumers`` holds consumer offsets and state. Commits write
rows, offsets and state in one transaction, which is what makes consumers exactly-once.

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
from headwater.observability.metrics import (
    STORE_COMMIT_SECONDS,
    STORE_QUERY_SECONDS,
    STORE_WRITE_ROWS,
)
from headwater.query.paging import next_cursor, plan_rows
from headwater.query.runner import connect_locked, run_select
from headwater.query.sandbox import rewrite_select
from headwater.store import duckdb_sql as q
from headwater.store.ports import (
    HIDDEN_COLUMNS,
    ResultWrite,
    RowPage,
    RowQuery,
    check_name,
    check_rows,
    check_upsert,
    last_per_key,
    merge_schema,
    normalize_rows,
    normalize_schema,
    require_columns,
)

WRITE_VIEW = "_hw_rows"


@dataclass(frozen=True, slots=True)
class _Table:
    physical: str
    schema: pa.Schema
    key: tuple[str, ...]

    @property
    def visible(self) -> list[str]:
        return [n for n in self.schema.names if n not in HIDDEN_COLUMNS]


class DuckDBStore:
    """The ``ResultStore`` of embedded mode.

    >>> import tempfile
    >>> from pathlib import Path
    >>> store = DuckDBStore(Path(tempfile.mkdtemp()) / "store.duckdb", memory_limit="256MB", threads=1)
    >>> store.ensure_table("acme", "counts", pa.schema([("k", pa.string()), ("n", pa.int64())]), key=["k"])
    >>> store.commit("acme", ResultWrite("job", {"topic": 2}, upserts={"counts": (pa.table({"k": ["a"], "n": [1]}), ["k"])}))
    >>> store.sql("acme", "SELECT n FROM counts", max_rows=10, timeout_s=1).to_pylist()
    [{'n': 1}]
    >>> store.close()
    """

    def __init__(
        self, path: Path, *, memory_limit: str, threads: int, checkpoint_threshold: str = "16MB"
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
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

    def ensure_table(
        self, tenant: str, table: str, schema: pa.Schema, key: list[str] | None = None
    ) -> None:
        """Create the table if missing; add columns the schema gained (widening types)."""
        check_name("tenant", tenant)
        check_name("table", table)
        schema = normalize_schema(schema)
        with self._write_lock, self._locks.hold([_table_lock(tenant, table)]):
            info = self._tables.get((tenant, table))
            if info is None:
                info = self._create(tenant, table, schema, tuple(key or ()))
            else:
                info = self._evolve(tenant, table, info, schema, key)
            # Copy on write: readers iterate the catalog without taking the lock.
            self._tables = {**self._tables, (tenant, table): info}

    def _create(self, tenant: str, table: str, schema: pa.Schema, key: tuple[str, ...]) -> _Table:
        require_columns(table, schema, key)
        physical = q.physical_name(tenant, table)
        for (t, name), other in self._tables.items():
            if (
                t == tenant and name.lower() == table.lower()
            ) or other.physical.lower() == physical.lower():
                raise Conflict(
                    f"table {table!r} clashes with existing table {name!r}; choose another name"
                )
        info = _Table(physical, schema, key)
        self._apply_ddl([q.create_table(physical, schema, key)], tenant, table, info)
        return info

    def _evolve(
        self, tenant: str, table: str, info: _Table, schema: pa.Schema, key: list[str] | None
    ) -> _Table:
        if key is not None and tuple(key) != info.key:
            raise IncompatibleSchema(
                f"table {table!r} is keyed by {list(info.key)}; its key cannot become {key}"
            )
        merged = merge_schema(table, info.schema, schema, list(info.key))
        if merged.equals(info.schema):
            return info
        new = _Table(info.physical, merged, info.key)
        self._apply_ddl(q.evolve_table(info.physical, info.schema, merged), tenant, table, new)
        return new

    def _apply_ddl(self, ddl: list[str], tenant: str, table: str, info: _Table) -> None:
        """Run ``ddl`` and record ``info`` in the catalog, in one transaction."""
        row = [tenant, table, info.physical, list(info.key), info.schema.serialize().to_pybytes()]
        with self._transaction() as cur:
            for statement in ddl:
                cur.execute(statement)
            cur.execute(q.SAVE_TABLE, row)

    def drop_table(self, tenant: str, table: str) -> None:
        """Drop the table and its rows; dropping a missing table does nothing."""
        with self._write_lock, self._locks.hold([_table_lock(tenant, table)]):
            info = self._tables.get((tenant, table))
            if info is None:
                return
            with self._transaction() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {q.quote(info.physical)}")
                cur.execute(q.DROP_TABLE_ROW, [tenant, table])
            self._tables = {k: v for k, v in self._tables.items() if k != (tenant, table)}

    def table_schema(self, tenant: str, table: str) -> pa.Schema | None:
        info = self._tables.get((tenant, table))
        return None if info is None else info.schema

    # --- writes ---------------------------------------------------------------

    def commit(self, tenant: str, write: ResultWrite) -> None:
        """Apply every part of ``write`` in one transaction, or none of it.

        Commits that touch different tables and consumers run side by side (DuckDB's
        MVCC never sees them conflict); commits to one table or consumer take turns.
        So a pipeline's small upsert does not queue behind the materializer's bulk append.
        """
        started = time.perf_counter()
        appended = upserted = 0
        names = [_table_lock(tenant, t) for t in [*write.appends, *write.upserts]]
        if write.offsets or write.state is not None:
            names.append(f"consumer:{tenant}/{write.consumer}")
        with self._locks.hold(names), self._transaction() as cur:
            # Each part is checked just before it runs: a bad part rolls back the ones before.
            for table, rows in write.appends.items():
                appended += self._append(cur, tenant, table, rows)
            for table, (rows, key) in write.upserts.items():
                upserted += self._upsert(cur, tenant, table, rows, key)
            if write.offsets or write.state is not None:
                self._save_consumer(cur, tenant, write)
        STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        STORE_WRITE_ROWS.labels("append").inc(appended)
        STORE_WRITE_ROWS.labels("upsert").inc(upserted)

    def _append(
        self, cur: duckdb.DuckDBPyConnection, tenant: str, table: str, rows: pa.Table
    ) -> int:
        info = self._info(tenant, table)
        check_rows(table, info.schema, rows)
        if rows.num_rows:
            self._run_with_rows(cur, q.append(info.physical, WRITE_VIEW), normalize_rows(rows))
        return int(rows.num_rows)

    def _upsert(
        self,
        cur: duckdb.DuckDBPyConnection,
        tenant: str,
        table: str,
        rows: pa.Table,
        key: list[str],
    ) -> int:
        info = self._info(tenant, table)
        check_upsert(table, info.key, rows, key)
        check_rows(table, info.schema, rows)
        if rows.num_rows:
            # ON CONFLICT may not touch one row twice per statement: the last row per key wins first.
            rows = last_per_key(normalize_rows(rows), key)
            sql = q.upsert(info.physical, info.schema, rows.column_names, key, WRITE_VIEW)
            self._run_with_rows(cur, sql, rows)
        return int(rows.num_rows)

    def _run_with_rows(self, cur: duckdb.DuckDBPyConnection, sql: str, rows: pa.Table) -> None:
        cur.register(WRITE_VIEW, rows)  # an Arrow scan: no copy until DuckDB writes the rows
        try:
            cur.execute(sql)
        finally:
            cur.unregister(WRITE_VIEW)

    def _save_consumer(
        self, cur: duckdb.DuckDBPyConnection, tenant: str, write: ResultWrite
    ) -> None:
        # Offsets only: the state may be megabytes, and this write replaces it anyway.
        found = cur.execute(q.LOAD_OFFSETS, [tenant, write.consumer]).fetchone()
        offsets = {**(json.loads(found[0]) if found else {}), **write.offsets}
        cur.execute(q.SAVE_CONSUMER, [tenant, write.consumer, json.dumps(offsets), write.state])

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

    def consumer_offsets(self, tenant: str, consumer: str) -> dict[str, int]:
        with self._reading("consumer") as cur:
            found = cur.execute(q.LOAD_OFFSETS, [tenant, consumer]).fetchone()
        return {str(k): int(v) for k, v in json.loads(found[0]).items()} if found else {}

    def committed_offsets(self) -> dict[tuple[str, str], dict[str, int]]:
        with self._reading("consumer") as cur:
            found = cur.execute(q.LOAD_ALL_OFFSETS).fetchall()
        return {
            (str(t), str(c)): {str(k): int(v) for k, v in json.loads(o).items()}
            for t, c, o in found
        }

    def consumer_state(self, tenant: str, consumer: str) -> bytes | None:
        with self._reading("consumer") as cur:
            found = cur.execute(q.LOAD_CONSUMER, [tenant, consumer]).fetchone()
        return None if found is None or found[1] is None else bytes(found[1])

    def read_rows(self, query: RowQuery) -> RowPage:
        info = self._info(query.tenant, query.table)
        plan = plan_rows(query, info.schema, info.key, q.ROWID)
        sql, params = q.select_rows(info.physical, info.visible, plan)
        with self._reading("rows") as cur:
            found = cur.sql(sql, params=params).to_arrow_table()
        page = found.slice(0, plan.limit)
        cursor = next_cursor(plan, page) if found.num_rows > plan.limit else None
        return RowPage(self._typed(info, page.select(info.visible)), cursor)

    def count_rows(self, query: RowQuery) -> int:
        info = self._info(query.tenant, query.table)
        plan = plan_rows(query, info.schema, info.key, q.ROWID)
        where, params = q.where_clause(plan, with_cursor=False)
        with self._reading("count") as cur:
            found = cur.execute(
                f"SELECT count(*) FROM {q.quote(info.physical)}{where}", params
            ).fetchone()
        return int(found[0]) if found else 0

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
        tiebreak = "_offset" if "_offset" in info.schema.names else q.ROWID
        plan = plan_rows(
            RowQuery(tenant, table, filters=filters or {}), info.schema, info.key, q.ROWID
        )
        where, params = q.where_clause(plan, with_cursor=False)
        sql, n_first = q.latest_per_key(
            info.physical, info.visible, key, time_column, tiebreak, where
        )
        with self._reading("latest") as cur:
            found = cur.sql(sql, params=[n, *params] if n_first else [*params, n]).to_arrow_table()
        return self._typed(info, found)

    def id_hashes(self, tenant: str, table: str, since_ms: int | None) -> pa.Array:
        """Every stored ``_id_hash`` of a stream table (rows received at or after ``since_ms``)."""
        info = self._info(tenant, table)
        if "_id_hash" not in info.schema.names:
            return pa.array([], pa.uint64())
        sql = f"SELECT _id_hash FROM {q.quote(info.physical)} WHERE _id_hash IS NOT NULL"
        params = []
        if since_ms is not None and "_received_ms" in info.schema.names:
            sql += " AND _received_ms >= ?"
            params.append(since_ms)
        with self._reading("id_hashes") as cur:
            found = cur.sql(sql, params=params).to_arrow_table()
        return found.column(0).combine_chunks().cast(pa.uint64())

    def delete_before(self, tenant: str, table: str, column: str, before_ms: int) -> int:
        """Delete the rows whose int64 ms ``column`` is below ``before_ms``; return how many."""
        info = self._info(tenant, table)
        if column not in info.schema.names or not pa.types.is_integer(
            info.schema.field(column).type
        ):
            raise BadRequest(f"table {table!r} has no integer column {column!r}", code="bad_column")
        sql = f"DELETE FROM {q.quote(info.physical)} WHERE {q.quote(column)} < ?"
        with self._locks.hold([_table_lock(tenant, table)]), self._transaction() as cur:
            found = cur.execute(sql, [before_ms]).fetchone()
        return int(found[0]) if found else 0

    def rows_by_offset(
        self, tenant: str, table: str, start: int, end: int, max_rows: int
    ) -> pa.Table:
        """Rows with ``start <= _offset < end`` in offset order (see ``ResultStore``)."""
        info = self._info(tenant, table)
        cols = ", ".join(q.quote(n) for n in info.schema.names)
        sql = (
            f"SELECT {cols} FROM {q.quote(info.physical)} WHERE _offset >= ? AND _offset < ?"
            " ORDER BY _offset LIMIT ?"
        )
        with self._reading("rows_by_offset") as cur:
            found = cur.sql(sql, params=[start, end, max_rows]).to_arrow_table()
        return self._typed(info, found)

    def sql(self, tenant: str, query: str, *, max_rows: int, timeout_s: float) -> pa.Table:
        """Run a read-only SELECT that can see only ``tenant``'s tables, by their names."""
        names = {
            name.lower(): info.physical for (t, name), info in self._tables.items() if t == tenant
        }
        select = rewrite_select(query, names.get)
        with self._reading("sql") as cur:
            cur.begin()  # rolled back below: nothing a query does can stick
            try:
                return run_select(
                    cur, select.sql, max_rows=max_rows, timeout_s=timeout_s,
                    names={p: logical for logical, p in select.tables.items()},
                )  # fmt: skip
            finally:
                cur.rollback()

    def close(self) -> None:
        with self._write_lock, self._cursor_lock:
            for cur in self._idle:
                cur.close()
            self._idle.clear()
            self._db.close()

    # --- helpers --------------------------------------------------------------

    def _info(self, tenant: str, table: str) -> _Table:
        info = self._tables.get((tenant, table))
        if info is None:
            raise NotFound(f"table {table!r} does not exist", code="unknown_table", table=table)
        return info

    @contextmanager
    def _reading(self, kind: str) -> Iterator[duckdb.DuckDBPyConnection]:
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

    @staticmethod
    def _typed(info: _Table, rows: pa.Table) -> pa.Table:
        """DuckDB's Arrow types (e.g. timestamp[us]) cast back to the table's own."""
        target = pa.schema([info.schema.field(n) for n in rows.column_names])
        return rows.cast(target, safe=False)

    def _load_catalog(self) -> dict[tuple[str, str], _Table]:
        tables = {}
        for tenant, name, physical, key, blob in self._db.execute(q.LOAD_CATALOG).fetchall():
            schema = pa.ipc.read_schema(pa.py_buffer(blob))
            tables[(tenant, name)] = _Table(physical, schema, tuple(key))
        return tables


def _table_lock(tenant: str, table: str) -> str:
    return f"table:{tenant}/{table}"


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
