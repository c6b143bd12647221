"""``DuckDBStore``: the embedded serving store, one DuckDB database file per tenant.

Tenant ``t`` lives in ``<root>/t.duckdb``, a DuckDB instance of its own (see
``TenantDatabase``): its tables, its consumers' offsets and state, and its users' SQL.
A query of tenant ``a`` runs on ``a``'s instance, where no other tenant's table
exists, so no spelling of a name (CTEs, quoting, case, Unicode look-alikes) can reach
one; the SQL sandbox stays in front as a second wall. Every commit touches one tenant,
so it is still one transaction of one database.

Memory: each instance gets ``tenant_memory_limit`` of the shared ``memory_limit``
(less when less is left; the tenants already stored at start share it evenly if they
do not all fit at full size); past the total, a further tenant gets the least a database
can work with (32 MiB) and a warning is logged: tenants are created by operators, so
their number, and this overcommit, is theirs to bound. Instances open when a tenant first creates a table or runs a query
(or at start, for files already there) and stay open.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import structlog

from headwater.errors import Conflict, NotFound
from headwater.observability.metrics import STORE_COMMIT_SECONDS, STORE_WRITE_ROWS
from headwater.query.limits import QueryBudget
from headwater.store import duckdb_sql as q
from headwater.store.duckdb_tenant import TenantDatabase
from headwater.store.ports import (
    ResultWrite,
    RowPage,
    RowQuery,
    check_name,
    normalize_schema,
    require_columns,
)

log = structlog.get_logger("headwater.store")

SUFFIX = ".duckdb"
MIN_TENANT_BYTES = 32 * 1024 * 1024  # below this a DuckDB instance cannot do useful work
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


class DuckDBStore:
    """The ``ResultStore`` of embedded mode.

    >>> import tempfile
    >>> from pathlib import Path
    >>> store = DuckDBStore(Path(tempfile.mkdtemp()) / "store", memory_limit="512MB", threads=1)
    >>> store.ensure_table("acme", "counts", pa.schema([("k", pa.string()), ("n", pa.int64())]), key=["k"])
    >>> store.commit("acme", ResultWrite("job", {"topic": 2}, upserts={"counts": (pa.table({"k": ["a"], "n": [1]}), ["k"])}))
    >>> store.sql("acme", "SELECT n FROM counts", max_rows=10, timeout_s=1).to_pylist()
    [{'n': 1}]
    >>> sorted(p.name for p in store.root.glob("*.duckdb"))
    ['acme.duckdb']
    >>> store.close()
    """

    def __init__(
        self,
        root: Path,
        *,
        memory_limit: str,
        threads: int,
        tenant_memory_limit: str | None = None,
        checkpoint_threshold: str = "16MB",
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self._threads = threads
        self._checkpoint_threshold = checkpoint_threshold
        self._left = parse_bytes(memory_limit)
        # Unset: a quarter each, so four tenants fit at full size.
        per_tenant = parse_bytes(tenant_memory_limit) if tenant_memory_limit else self._left // 4
        self._per_tenant = min(per_tenant, self._left)
        self._open_lock = threading.Lock()
        self._dbs: dict[str, TenantDatabase] = {}
        found = sorted(root.glob(f"*{SUFFIX}"))
        # Tenants already stored all open now: more than fit at full size share evenly.
        at_start = min(self._per_tenant, self._left // max(1, len(found)))
        for path in found:
            try:
                self._open(path.name.removesuffix(SUFFIX), at_start)
            except duckdb.Error as exc:  # name the file: the data dir has one per tenant
                raise type(exc)(f"{path}: {exc}") from exc

    # --- tenants --------------------------------------------------------------

    def _open(self, tenant: str, share: int | None = None) -> TenantDatabase:
        """The tenant's database, opened (and created) now if it is not open yet."""
        db = self._dbs.get(tenant)
        if db is not None:
            return db
        with self._open_lock:
            db = self._dbs.get(tenant)
            if db is not None:
                return db
            if any(t.lower() == tenant.lower() for t in self._dbs):
                # Their files would be one file on a case-insensitive file system.
                raise Conflict(
                    f"tenant {tenant!r} differs from another tenant only in letter case; "
                    "its tables cannot be stored apart from that tenant's",
                    code="tenant_name_clash",
                )
            share = min(share or self._per_tenant, self._left)
            if share < MIN_TENANT_BYTES:
                # Tenants are created by operators, so their number is bounded by them: past
                # the total, each further tenant gets the least a database can work with.
                log.warning(
                    "store_memory_overcommitted", tenant=tenant, tenants=len(self._dbs),
                    advice="raise duckdb_memory_limit or lower duckdb_tenant_memory_limit",
                )  # fmt: skip
                share = MIN_TENANT_BYTES
            db = TenantDatabase(
                self.root / f"{tenant}{SUFFIX}",
                memory_limit=f"{share // 2**20}MiB",
                threads=self._threads,
                checkpoint_threshold=self._checkpoint_threshold,
            )
            self._left -= share
            self._dbs = {**self._dbs, tenant: db}  # copy on write: readers take no lock
            return db

    def _existing(self, tenant: str, table: str) -> TenantDatabase:
        db = self._dbs.get(tenant)
        if db is None:
            raise NotFound(f"table {table!r} does not exist", code="unknown_table", table=table)
        return db

    def tenant_tables(self, tenant: str) -> list[str]:
        """Names of the tenant's tables, sorted."""
        db = self._dbs.get(tenant)
        return db.names() if db is not None else []

    # --- tables ---------------------------------------------------------------

    def ensure_table(
        self, tenant: str, table: str, schema: pa.Schema, key: list[str] | None = None
    ) -> None:
        """Create the table if missing; add columns the schema gained (widening types)."""
        check_name("tenant", tenant)
        check_name("table", table)
        schema = normalize_schema(schema)
        require_columns(table, schema, key or [])
        self._open(tenant).ensure_table(table, schema, key)

    def drop_table(self, tenant: str, table: str) -> None:
        """Drop the table and its rows; dropping a missing table does nothing."""
        db = self._dbs.get(tenant)
        if db is not None:
            db.drop_table(table)

    def table_schema(self, tenant: str, table: str) -> pa.Schema | None:
        db = self._dbs.get(tenant)
        return None if db is None else db.table_schema(table)

    # --- writes ---------------------------------------------------------------

    def commit(self, tenant: str, write: ResultWrite) -> None:
        """Apply every part of ``write`` in one transaction of the tenant's database.

        Commits that touch different tables and consumers run side by side (DuckDB's
        MVCC never sees them conflict); commits to one table or consumer take turns.
        So a pipeline's small upsert does not queue behind the materializer's bulk append.
        """
        started = time.perf_counter()
        if write.appends or write.upserts:
            db = self._existing(tenant, next(iter([*write.appends, *write.upserts])))
        else:
            db = self._open(tenant)
        appended, upserted = db.commit(write)
        STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        STORE_WRITE_ROWS.labels("append").inc(appended)
        STORE_WRITE_ROWS.labels("upsert").inc(upserted)

    def delete_before(self, tenant: str, table: str, column: str, before_ms: int) -> int:
        """Delete the rows whose int64 ms ``column`` is below ``before_ms``; return how many."""
        return self._existing(tenant, table).delete_before(table, column, before_ms)

    def delete_in(self, tenant: str, table: str, column: str, values: pa.Array) -> int:
        """Delete the rows whose ``column`` holds one of ``values``; return how many."""
        return self._existing(tenant, table).delete_in(table, column, values)

    # --- reads ----------------------------------------------------------------

    def consumer_offsets(self, tenant: str, consumer: str) -> dict[str, int]:
        db = self._dbs.get(tenant)
        return {} if db is None else db.consumer(consumer)[0]

    def committed_offsets(self) -> dict[tuple[str, str], dict[str, int]]:
        out: dict[tuple[str, str], dict[str, int]] = {}
        for tenant, db in self._dbs.items():
            rows = db.select("consumer", q.LOAD_ALL_OFFSETS, [])
            for c, o in zip(rows["consumer"].to_pylist(), rows["offsets"].to_pylist(), strict=True):
                out[(tenant, str(c))] = {str(k): int(v) for k, v in json.loads(o).items()}
        return out

    def consumer_state(self, tenant: str, consumer: str) -> bytes | None:
        db = self._dbs.get(tenant)
        return None if db is None else db.consumer(consumer)[1]

    def read_rows(self, query: RowQuery) -> RowPage:
        return self._existing(query.tenant, query.table).read_rows(query)

    def count_rows(self, query: RowQuery) -> int:
        return self._existing(query.tenant, query.table).count_rows(query)

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
        db = self._existing(tenant, table)
        return db.latest_per_key(table, key, time_column, n, filters or {})

    def id_hashes(self, tenant: str, table: str, since_ms: int | None) -> pa.Array:
        """Every stored ``_id_hash`` of a stream table (rows received at or after ``since_ms``)."""
        db = self._existing(tenant, table)
        schema = db.info(table).schema
        if "_id_hash" not in schema.names:
            return pa.array([], pa.uint64())
        sql = f"SELECT _id_hash FROM {q.table_ref(table)} WHERE _id_hash IS NOT NULL"
        params: list[Any] = []
        if since_ms is not None and "_received_ms" in schema.names:
            sql += " AND _received_ms >= ?"
            params.append(since_ms)
        found = db.select("id_hashes", sql, params)
        return found.column(0).combine_chunks().cast(pa.uint64())

    def rows_by_offset(
        self, tenant: str, table: str, start: int, end: int, max_rows: int
    ) -> pa.Table:
        """Rows with ``start <= _offset < end`` in offset order (see ``ResultStore``)."""
        db = self._existing(tenant, table)
        cols = ", ".join(q.quote(n) for n in db.info(table).schema.names)
        sql = (
            f"SELECT {cols} FROM {q.table_ref(table)} WHERE _offset >= ? AND _offset < ?"
            " ORDER BY _offset LIMIT ?"
        )
        return db.typed(table, db.select("rows_by_offset", sql, [start, end, max_rows]))

    def sql(
        self,
        tenant: str,
        query: str,
        *,
        max_rows: int,
        timeout_s: float,
        budget: QueryBudget | None = None,
    ) -> pa.Table:
        """Run a read-only SELECT on the tenant's own database: only its tables exist there."""
        check_name("tenant", tenant)
        return self._open(tenant).sql(query, max_rows=max_rows, timeout_s=timeout_s, budget=budget)

    def stored_bytes(self, tenant: str) -> int:
        """Size of the tenant's database file and its write-ahead log."""
        path = self.root / f"{tenant}{SUFFIX}"
        total = 0
        for p in (path, path.with_name(path.name + ".wal")):
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
        return total

    def close(self) -> None:
        with self._open_lock:
            for db in self._dbs.values():
                db.close()
            self._dbs = {}


def parse_bytes(size: str) -> int:
    """Bytes of a DuckDB-style size ("4GB", "512MiB", "1.5 GB").

    >>> parse_bytes("4GB"), parse_bytes("512MiB")
    (4000000000, 536870912)
    """
    found = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", size)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _UNITS:
        raise ValueError(f"{size!r} is not a size; write e.g. '4GB' or '512MiB'")
    return int(float(found.group(1)) * _UNITS[unit])
