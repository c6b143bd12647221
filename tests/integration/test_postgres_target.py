"""How the PostgreSQL sink writes a batch (``sinks.postgres.Target``) against a private
cluster: ``COPY`` straight into the table while the keys are new, the upsert when one is
there already, dead letters either way, and never a ``COPY`` without a unique key index.
A statement trigger on the table records which statement wrote (and its commit mode)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from headwater.sinks.config import PostgresConfig
from headwater.sinks.postgres import Moved, Target
from pgcluster import PgCluster

TRIGGER = """
CREATE TABLE how (n serial, stmt text, sync text);
CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
  INSERT INTO how (stmt, sync) VALUES (upper(split_part(ltrim(current_query()), ' ', 1)),
                                       current_setting('synchronous_commit'));
  RETURN NULL; END $$;
CREATE TRIGGER note AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION note();
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = PgCluster().start()
    yield c
    c.stop()


def target(cluster: PgCluster, db: str, ddl: str, **options: Any) -> tuple[Target, str]:
    dsn = cluster.create_db(db)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(ddl)
        conn.execute(TRIGGER)
    cfg = PostgresConfig(dsn=dsn, key=["k"], table="t", create_table=False, **options)
    t = Target(cfg, "t", "tenant/sink/1")
    assert t.restore("topic", 0) == (0, 0, 0)
    return t, dsn


def rows(keys: list[int], tag: str) -> pa.Table:
    return pa.table({"k": pa.array(keys, pa.int64()), "v": [f"{tag}{k}" for k in keys]})


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def written_by(dsn: str) -> list[str]:
    return [r[0] for r in query(dsn, "SELECT stmt FROM how ORDER BY n")]


def test_copy_while_keys_are_new_then_the_upsert(cluster: PgCluster) -> None:
    t, dsn = target(cluster, "copy_in", "CREATE TABLE t (k bigint PRIMARY KEY, v text)")
    try:
        assert t.write(rows([0, 1, 2, 3], "a"), 0, 4, lambda _: None) == []
        assert written_by(dsn) == ["COPY"]
        assert t.write(rows([2, 3, 4, 5], "b"), 4, 8, lambda _: None) == []  # 2, 3 there
        assert written_by(dsn) == ["COPY", "INSERT"]  # the COPY rolled back, the upsert
        assert t.write(rows([6, 7], "c"), 8, 10, lambda _: None) == []  # still the upsert
        assert t.write(rows([8, 9, 8], "d"), 10, 13, lambda _: None) == []  # then COPY again
        assert written_by(dsn) == ["COPY", "INSERT", "INSERT", "COPY"]
        assert query(dsn, "SELECT k, v FROM t ORDER BY k") == [
            (0, "a0"), (1, "a1"), (2, "b2"), (3, "b3"), (4, "b4"), (5, "b5"), (6, "c6"),
            (7, "c7"), (8, "d8"), (9, "d9"),
        ]  # fmt: skip
        assert query(dsn, "SELECT next_offset, delivered FROM headwater_sink_progress") == [
            (13, 13)
        ]
        with pytest.raises(Moved):  # the same batch again: nothing moves, nothing is written
            t.write(rows([10, 11], "e"), 10, 13, lambda _: None)
        assert query(dsn, "SELECT count(*) FROM t") == [(10,)]
    finally:
        t.close()


def test_a_refused_value_among_new_keys_is_a_dead_letter(cluster: PgCluster) -> None:
    ddl = "CREATE TABLE t (k bigint PRIMARY KEY, v text CHECK (v <> 'x2'))"
    t, dsn = target(cluster, "refused", ddl)
    try:
        dead: list[Any] = []
        refused = t.write(rows([1, 2, 3], "x"), 0, 3, dead.append)
        assert [i for i, _ in refused] == [1] and "t_v_check" in refused[0][1]
        assert dead == [refused]
        assert query(dsn, "SELECT k FROM t ORDER BY k") == [(1,), (3,)]
        assert query(dsn, "SELECT next_offset, delivered, dead_lettered "
                          "FROM headwater_sink_progress") == [(3, 2, 1)]  # fmt: skip
    finally:
        t.close()


def test_no_copy_without_a_unique_index_on_the_key(cluster: PgCluster) -> None:
    """A COPY would add a second row of a key there: the upsert refuses instead."""
    t, dsn = target(cluster, "no_key", "CREATE TABLE t (k bigint, v text)")
    try:
        with pytest.raises(psycopg.errors.InvalidColumnReference):
            t.write(rows([1, 2], "a"), 0, 2, lambda _: None)
        assert query(dsn, "SELECT count(*) FROM t") == [(0,)]
        assert query(dsn, "SELECT next_offset FROM headwater_sink_progress") == [(0,)]
    finally:
        t.close()


@pytest.mark.parametrize(("copy_new_keys", "synchronous_commit"), [(False, False)])
def test_the_options(cluster: PgCluster, copy_new_keys: bool, synchronous_commit: bool) -> None:
    ddl = "CREATE TABLE t (k bigint PRIMARY KEY, v text)"
    t, dsn = target(cluster, "options", ddl, copy_new_keys=copy_new_keys,
                    synchronous_commit=synchronous_commit)  # fmt: skip
    try:
        assert t.write(rows([1, 2], "a"), 0, 2, lambda _: None) == []
        assert query(dsn, "SELECT stmt, sync FROM how") == [("INSERT", "off")]
        assert query(dsn, "SELECT k, v FROM t ORDER BY k") == [(1, "a1"), (2, "a2")]
        t.conn.execute("SELECT 1")  # the setting was the transaction's only
        assert t.conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    finally:
        t.close()
