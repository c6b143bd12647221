"""Run a sandboxed SELECT on a DuckDB cursor with a deadline and a row cap.

The deadline interrupts the query from a timer thread (``interrupt()`` is DuckDB's
own cancellation point), so a runaway join stops within milliseconds of its budget.
The row cap streams the answer batch by batch and stops pulling after
``max_rows + 1`` rows, so a huge answer is never built in memory.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import duckdb
import pyarrow as pa

from headwater.errors import QueryError
from headwater.store.ports import TRUNCATED_KEY

BATCH_ROWS = 8192


def connect_locked(
    database: str, *, memory_limit: str, threads: int, **config: str | int
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection no query can use to reach files, the network or Python objects.

    ``enable_external_access=false`` refuses file, network and extension access to every
    statement (the database's own file and spill files are still DuckDB's to manage);
    ``lock_configuration=true`` then forbids any SET that could undo it. Sessions work
    in UTC so ``date_trunc`` and friends give the same answer on every machine.
    """
    settings: dict[str, str | bool | int | float | list[str]] = {
        "memory_limit": memory_limit,
        "threads": threads,
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "python_enable_replacements": False,  # no query may read a Python variable by name
        **config,
    }
    conn = duckdb.connect(database, config=settings)
    conn.execute("SET GLOBAL TimeZone = 'UTC'")  # ICU is built in but loads after connect
    conn.execute("SET lock_configuration = true")
    return conn


class _Deadline:
    """Interrupts ``cursor`` after ``timeout_s`` unless the query finished first."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, timeout_s: float) -> None:
        self._cursor = cursor
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *_: object) -> None:
        # Under the lock, so the timer never interrupts a cursor the caller reuses or closes.
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                self.fired = True
                self._cursor.interrupt()


def run_select(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    max_rows: int,
    timeout_s: float,
    names: Mapping[str, str] | None = None,
) -> pa.Table:
    """Run ``sql`` and return at most ``max_rows`` rows, marked when truncated.

    ``names`` maps physical table names back to the user's names, so error messages
    speak of the tables the user wrote.
    """
    batches: list[pa.RecordBatch] = []
    rows = 0
    deadline = _Deadline(cursor, timeout_s)
    try:
        with deadline:
            reader = cursor.sql(sql).to_arrow_reader(BATCH_ROWS)
            schema = reader.schema
            for batch in reader:
                batches.append(batch)
                rows += batch.num_rows
                if rows > max_rows:
                    break
            reader.close()
    except duckdb.InterruptException as exc:
        raise QueryError(
            f"the query ran longer than {timeout_s:g}s and was stopped; narrow it or add a LIMIT",
            code="query_timeout",
        ) from exc
    except duckdb.OutOfMemoryException as exc:
        # DuckDB's own advice (SET memory_limit, threads) is not for API callers.
        raise QueryError(
            "the query needed more memory than the tenant's store may use (setting duckdb_tenant_memory_limit); "
            "filter or aggregate more, narrow the time range, or add a LIMIT",
            code="query_out_of_memory",
        ) from exc
    except duckdb.Error as exc:
        if deadline.fired:
            raise QueryError(
                f"the query ran longer than {timeout_s:g}s and was stopped", code="query_timeout"
            ) from exc
        raise QueryError(_clean(str(exc), names or {}), code="query_error") from exc
    table = pa.Table.from_batches(batches, schema=schema)
    if rows > max_rows:
        table = table.slice(0, max_rows).replace_schema_metadata(
            {**(schema.metadata or {}), TRUNCATED_KEY: b"true"}
        )
    return table


def _clean(message: str, names: Mapping[str, str]) -> str:
    for physical in sorted(names, key=len, reverse=True):  # "_cte#10" before "_cte#1"
        message = message.replace(physical, names[physical])
    return message
