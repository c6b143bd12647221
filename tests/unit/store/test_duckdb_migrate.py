"""The single store file of earlier versions moves into one database per tenant, once.

The legacy file is written here the way earlier versions wrote it (their DDL), so the
test does not depend on old code.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from headwater.store.duckdb import DuckDBStore
from headwater.store.duckdb_migrate import migrate_shared_store
from headwater.store.ports import ResultWrite, RowQuery

TS = pa.timestamp("ms", tz="UTC")
READINGS = pa.schema([("k", pa.string()), ("ts", TS), ("v", pa.int64()), ("_offset", pa.int64())])
MINUTE = pa.schema([("k", pa.string()), ("n", pa.int64())])
LEGACY_DDL = (
    """CREATE TABLE _hw_tables (tenant VARCHAR, name VARCHAR, physical VARCHAR NOT NULL,
        key_columns VARCHAR[] NOT NULL, arrow_schema BLOB NOT NULL, PRIMARY KEY (tenant, name))""",
    """CREATE TABLE _hw_consumers (tenant VARCHAR, consumer VARCHAR, offsets VARCHAR NOT NULL,
        state BLOB, PRIMARY KEY (tenant, consumer))""",
    'CREATE TABLE "t_acme__readings" (k VARCHAR, ts TIMESTAMPTZ, v BIGINT, _offset BIGINT)',
    'CREATE TABLE "t_acme__minute" (k VARCHAR, n BIGINT, PRIMARY KEY (k))',
    'CREATE TABLE "t_zeta__readings" (k VARCHAR, ts TIMESTAMPTZ, v BIGINT, _offset BIGINT)',
)


def write_legacy(path: Path) -> None:
    con = duckdb.connect(str(path))
    for ddl in LEGACY_DDL:
        con.execute(ddl)
    for tenant, name, key, schema in [
        ("acme", "readings", [], READINGS),
        ("acme", "minute", ["k"], MINUTE),
        ("zeta", "readings", [], READINGS),
    ]:
        physical = f"t_{tenant}__{name}"
        blob = schema.serialize().to_pybytes()
        con.execute("INSERT INTO _hw_tables VALUES (?, ?, ?, ?, ?)", [tenant, name, physical, key, blob])  # fmt: skip
    con.execute(
        "INSERT INTO \"t_acme__readings\" SELECT 'a', TIMESTAMPTZ '2026-01-01 00:00:00+00', i, i "
        "FROM range(5) t(i)"
    )
    con.execute("INSERT INTO \"t_zeta__readings\" VALUES ('z', NULL, 9, 0)")
    con.execute("INSERT INTO \"t_acme__minute\" VALUES ('a', 3)")
    con.execute("INSERT INTO _hw_consumers VALUES ('acme', 'materialize:readings', '{\"acme.readings\": 5}', NULL)")  # fmt: skip
    con.execute("INSERT INTO _hw_consumers VALUES ('acme', 'p', '{\"acme.readings\": 4}', 'state'::BLOB)")  # fmt: skip
    con.close()  # a WAL may remain, as after a crash of the old server


def open_store(root: Path) -> DuckDBStore:
    return DuckDBStore(root, memory_limit="256MB", threads=1)


def check_migrated(root: Path) -> None:
    store = open_store(root)
    assert store.count_rows(RowQuery("acme", "readings")) == 5
    assert store.table_schema("acme", "readings") == READINGS
    assert store.read_rows(RowQuery("zeta", "readings")).rows.column("v").to_pylist() == [9]
    assert store.consumer_offsets("acme", "materialize:readings") == {"acme.readings": 5}
    assert store.consumer_offsets("acme", "p") == {"acme.readings": 4}
    assert store.consumer_state("acme", "p") == b"state"
    # the key came along: an upsert replaces the migrated row
    store.commit("acme", ResultWrite("p", {}, upserts={"minute": (pa.table({"k": ["a"], "n": [4]}), ["k"])}))  # fmt: skip
    assert store.read_rows(RowQuery("acme", "minute")).rows.to_pylist() == [{"k": "a", "n": 4}]
    assert store.sql("zeta", "SHOW TABLES", max_rows=10, timeout_s=5).to_pylist() == [{"name": "readings"}]  # fmt: skip
    store.close()


def test_each_tenant_moves_into_its_own_database_with_offsets_and_state(tmp_path: Path) -> None:
    legacy, root = tmp_path / "store.duckdb", tmp_path / "store"
    write_legacy(legacy)
    assert migrate_shared_store(legacy, root, memory_limit="256MB") == ["acme", "zeta"]
    assert not legacy.exists()
    assert (tmp_path / "store.duckdb.migrated").exists()  # kept until the operator deletes it
    check_migrated(root)
    assert migrate_shared_store(legacy, root, memory_limit="256MB") == []  # once


def test_a_migration_cut_short_is_finished_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy, root = tmp_path / "store.duckdb", tmp_path / "store"
    write_legacy(legacy)
    real_replace = os.replace

    def crash_on_zeta(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith("zeta.duckdb"):
            raise KeyboardInterrupt("the process died here")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_zeta)
    with pytest.raises(KeyboardInterrupt):
        migrate_shared_store(legacy, root, memory_limit="256MB")
    monkeypatch.undo()
    assert legacy.exists()  # the old file stays the truth until every tenant is in place
    assert (root / "acme.duckdb").exists() and not (root / "zeta.duckdb").exists()
    assert (root / "zeta.duckdb.partial").exists()

    assert migrate_shared_store(legacy, root, memory_limit="256MB") == ["zeta"]
    assert not (root / "zeta.duckdb.partial").exists()
    check_migrated(root)
