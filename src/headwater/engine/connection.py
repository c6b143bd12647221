"""Every DuckDB connection Headwater opens, in UTC whatever the machine's time zone.

DuckDB takes its session time zone from the operating system (``TZ``), and with it
the answers of ``strftime``, ``hour``, ``date_trunc`` and casts of TIMESTAMPTZ values:
under ``TZ=America/New_York`` a day grouping would split at 05:00 UTC while windows
are UTC. So every connection (store, queries, pipelines, ingest rules) comes from
``connect_duckdb``, which sets ``TimeZone = 'UTC'`` for the whole database (cursors
included) before anything runs on it. ICU, which owns the setting, loads only after
connect, so the zone is set by a statement rather than in ``config``.

>>> con = connect_duckdb()
>>> con.sql("SELECT current_setting('TimeZone')").fetchall()
[('UTC',)]
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb

Config = Mapping[str, str | bool | int | float | list[str]]


def connect_duckdb(
    database: str = ":memory:", config: Config | None = None, *, lock: bool = True
) -> duckdb.DuckDBPyConnection:
    """A connection in UTC; with ``lock``, no later ``SET`` can change its configuration."""
    con = duckdb.connect(database, config=dict(config or {}))
    con.execute("SET GLOBAL TimeZone = 'UTC'")
    if lock:
        con.execute("SET lock_configuration = true")
    return con
