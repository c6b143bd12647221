"""Run a sandboxed SELECT on a DuckDB cursor under the query caps and a row cap.

The caps (deadline, memory, answer bytes) are enforced by ``query.guarded.fetch``:
a watcher interrupts the query (``interrupt()`` is DuckDB's own cancellation point)
and the answer streams batch by batch, stopping after ``max_rows + 1`` rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa

from headwater.engine.connection import connect_duckdb
from headwater.query.guarded import fetch, names_cleaner
from headwater.query.limits import QueryBudget, QueryLimits
from headwater.query.spec import TRUNCATED_KEY


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
    return connect_duckdb(database, settings)


def run_select(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    *,
    max_rows: int,
    timeout_s: float,
    names: Mapping[str, str] | None = None,
    budget: QueryBudget | None = None,
) -> pa.Table:
    """Run ``sql`` and return at most ``max_rows`` rows, marked when truncated.

    ``budget`` carries the caps (time, memory, answer bytes; see ``query.limits``);
    without one the query gets the default caps and ``timeout_s``. ``names`` maps
    physical table names back to the user's names, so error messages speak of the
    tables the user wrote.
    """
    budget = budget or QueryBudget.start(QueryLimits.for_server_sql(timeout_s))
    table, truncated = fetch(
        cursor, sql, budget, max_rows=max_rows, clean=names_cleaner(names or {})
    )
    if truncated:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), TRUNCATED_KEY: b"true"}
        )
    return table
