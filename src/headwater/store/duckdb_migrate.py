"""Move the single store file of earlier versions into one database per tenant.

Earlier versions kept every tenant's tables in ``<data_dir>/store.duckdb`` (physical
names ``t_<tenant>__<table>``, bookkeeping in ``_hw_tables`` and ``_hw_consumers``).
On start, each tenant's tables, consumer offsets and state are copied into
``<data_dir>/store/<tenant>.duckdb`` — rows, offsets and state together, so pipelines
and the materializer resume exactly where they were.

Crash-safe and done once: a tenant's database is written under a temporary name and
renamed into place only when complete (a start after a crash redoes the tenants not yet
in place), and the old file is renamed ``store.duckdb.migrated`` last. The old file is
kept, never changed beyond a checkpoint of its WAL; delete it once the server runs well.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import structlog

from headwater.engine.connection import connect_duckdb
from headwater.store import duckdb_sql as q

log = structlog.get_logger("headwater.store")

MIGRATED_SUFFIX = ".migrated"
_Config = dict[str, str | bool | int | float | list[str]]


def migrate_shared_store(old: Path, root: Path, *, memory_limit: str) -> list[str]:
    """Copy each tenant of ``old`` into ``root/<tenant>.duckdb``; the tenants copied now."""
    if not old.exists():
        return []
    root.mkdir(parents=True, exist_ok=True)
    config: _Config = {"memory_limit": memory_limit, "threads": 1}
    with connect_duckdb(str(old), config, lock=False) as con:  # replays and folds in its WAL
        con.execute("CHECKPOINT")
        tenants = [
            str(row[0])
            for row in con.execute(
                "SELECT tenant FROM _hw_tables UNION SELECT tenant FROM _hw_consumers ORDER BY 1"
            ).fetchall()
        ]
    copied = []
    for tenant in tenants:
        final = root / f"{tenant}.duckdb"
        if final.exists():
            continue  # an earlier start copied it, then stopped before the end
        _copy_tenant(old, tenant, final, config)
        copied.append(tenant)
    os.replace(old, old.with_name(old.name + MIGRATED_SUFFIX))
    _fsync_dir(old.parent)
    log.warning(
        "store_migrated",
        tenants=copied,
        kept=str(old.with_name(old.name + MIGRATED_SUFFIX)),
        note="one database per tenant now; delete the kept file once the server runs well",
    )
    return copied


def _copy_tenant(old: Path, tenant: str, final: Path, config: _Config) -> None:
    partial = final.with_name(final.name + ".partial")
    for leftover in (partial, partial.with_name(partial.name + ".wal")):
        leftover.unlink(missing_ok=True)
    with connect_duckdb(str(partial), config, lock=False) as con:
        con.execute(f"ATTACH {_literal(str(old))} AS legacy (READ_ONLY)")
        for ddl in q.CATALOG_DDL:
            con.execute(ddl)
        con.begin()
        tables = con.execute(
            "SELECT name, physical, key_columns, arrow_schema FROM legacy.main._hw_tables "
            "WHERE tenant = ?",
            [tenant],
        ).fetchall()
        for name, physical, key, blob in tables:
            schema = pa.ipc.read_schema(pa.py_buffer(blob))
            con.execute(q.create_table(name, schema, key))
            con.execute(
                f"INSERT INTO {q.table_ref(name)} BY NAME "
                f"SELECT * FROM legacy.main.{q.quote(physical)}"
            )
            con.execute(q.SAVE_TABLE, [name, key, blob])
        con.execute(
            f"INSERT INTO {q.SCHEMA}.consumers SELECT consumer, offsets, state "
            "FROM legacy.main._hw_consumers WHERE tenant = ?",
            [tenant],
        )
        con.commit()
        con.execute("DETACH legacy")
        con.execute("CHECKPOINT")
    with open(partial, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, final)
    _fsync_dir(final.parent)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
