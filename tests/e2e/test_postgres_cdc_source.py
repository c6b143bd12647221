"""PostgreSQL CDC sources against a private cluster (wal_level=logical): snapshot then
changes with op and lsn, types, quarantine, the slot dropped with the source, and kill -9
of the server with no loss and no duplicate."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from headwater.connectors.sources.pgoutput import lsn_of
from pgcluster import PgCluster, wait_for
from serverproc import Server

ITEMS = {
    "name": "items",
    "fields": [
        {"name": "id", "type": "int", "required": True},
        {"name": "name", "type": "string"},
        {"name": "price", "type": "float", "min": 0},
        {"name": "active", "type": "bool"},
        {"name": "created", "type": "timestamp"},
        {"name": "doc", "type": "json"},
        {"name": "op", "type": "string", "required": True},
        {"name": "lsn", "type": "int", "required": True},
        {"name": "table", "type": "string"},
    ],
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = PgCluster().start()
    yield c
    c.stop()


def query(c: httpx.Client, sql: str) -> list[list[Any]]:
    answer = c.post("/v1/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    rows: list[list[Any]] = answer.json()["rows"]
    return rows


def slots(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots")]


def test_snapshot_then_changes_with_op_lsn_types_and_quarantine(
    cluster: PgCluster, fresh_server: Server
) -> None:
    dsn = cluster.create_db("shop")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, "
                   "active bool, created timestamptz, doc jsonb)")  # fmt: skip
        db.execute("INSERT INTO items SELECT i, 'item ' || i, i * 1.5, i % 2 = 0, "
                   "'2026-01-02T03:04:05Z', '{\"k\": 1}' FROM generate_series(1, 3) i")  # fmt: skip
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=ITEMS).status_code == 201
        bad = c.post("/v1/sources", json={"name": "shop", "kind": "postgres_cdc",
                                          "stream": "items", "config": {"dsn": dsn}})  # fmt: skip
        assert bad.status_code == 400 and "config.tables" in bad.text, bad.text
        spec = {"name": "shop", "kind": "postgres_cdc", "stream": "items",
                "config": {"dsn": dsn, "tables": ["items"], "poll_ms": 50}}  # fmt: skip
        created = c.post("/v1/sources", json=spec)
        assert created.status_code == 201, created.text
        snap = wait_for(lambda: len(r := query(c, "SELECT id, op FROM items ORDER BY id")) == 3
                        and r)  # fmt: skip
        assert snap == [[1, "snapshot"], [2, "snapshot"], [3, "snapshot"]]
        assert len(slots(dsn)) == 1
        with psycopg.connect(dsn, autocommit=True) as db:
            db.execute("INSERT INTO items VALUES (4, 'four', 4.25, true, "
                       "'2026-05-06T07:08:09.5Z', '[1, 2]')")  # fmt: skip
            db.execute("UPDATE items SET name = 'one', price = 9 WHERE id = 1")
            db.execute("DELETE FROM items WHERE id = 2")
            db.execute("INSERT INTO items (id, price) VALUES (5, -1)")  # below min: quarantined
        got = wait_for(lambda: len(r := query(
            c, "SELECT id, op, name, price, active, created, doc, \"table\", lsn FROM items "
               "WHERE op <> 'snapshot' ORDER BY lsn")) == 3 and r)  # fmt: skip
        assert [r[:3] for r in got] == [[4, "insert", "four"], [1, "update", "one"],
                                        [2, "delete", None]]  # fmt: skip
        four = got[0]
        assert four[3] == 4.25 and four[4] is True and four[7] == "items"
        assert four[5].startswith("2026-05-06T07:08:09.5"), four
        assert four[6] in ([1, 2], "[1,2]", "[1, 2]"), four
        assert got[0][8] < got[1][8] < got[2][8]
        snap_lsn = query(c, "SELECT max(lsn) FROM items WHERE op = 'snapshot'")[0][0]
        assert snap_lsn < got[0][8]
        q = wait_for(lambda: c.get("/v1/streams/items/quarantine").json()["rows"])
        assert len(q) == 1 and q[0]["code"] == "below_min", q
        assert q[0]["request_id"].startswith("source:shop:"), q
        view = c.get("/v1/sources/shop").json()
        assert view["status"] == "running" and view["rows_in"] == 6 and view["rows_rejected"] == 1
        assert view["lag"] >= 0 and lsn_of(view["position"]) > got[2][8], view
        assert c.delete("/v1/sources/shop").status_code == 200
        assert wait_for(lambda: not slots(dsn) and not publications(dsn)), slots(dsn)


def publications(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT pubname FROM pg_publication")]


EVENTS = {
    "name": "events",
    "fields": [
        {"name": "id", "type": "int", "required": True},
        {"name": "n", "type": "int"},
        {"name": "op", "type": "string", "required": True},
        {"name": "lsn", "type": "int", "required": True},
    ],
}
INITIAL = 20_000


def writer(dsn: str, stop: threading.Event, inserted: list[int]) -> None:
    """Inserts, updates and deletes in small transactions until told to stop."""
    rng = random.Random(7)
    with psycopg.connect(dsn, autocommit=True) as db:
        while not stop.is_set():
            with db.transaction():
                ids = db.execute("INSERT INTO ev (n) SELECT 0 FROM generate_series(1, 5) "
                                 "RETURNING id").fetchall()  # fmt: skip
                inserted += [i for (i,) in ids]
                some = [rng.randrange(1, INITIAL) for _ in range(3)]
                db.execute("UPDATE ev SET n = n + 1 WHERE id = ANY(%s)", (some,))
                db.execute("DELETE FROM ev WHERE id = %s", (rng.randrange(1, INITIAL),))
            stop.wait(0.02)


def replayed(c: httpx.Client) -> dict[int, int]:
    """The table as the stream tells it: each id's newest row by lsn (a change after a
    snapshot row of the same lsn), unless it is a delete."""
    rows = query(c, "SELECT id, n, op FROM (SELECT *, row_number() OVER (PARTITION BY id "
                    "ORDER BY lsn DESC, op <> 'snapshot' DESC) AS rk FROM events) "
                    "WHERE rk = 1 AND op <> 'delete'")  # fmt: skip
    return {i: n for i, n, _ in rows}


def test_kill_9_mid_snapshot_and_mid_stream_loses_nothing_and_doubles_nothing(
    cluster: PgCluster, tmp_path: Path
) -> None:
    """Transactions keep committing while the server is killed during the snapshot, and
    again while it follows the changes."""
    dsn = cluster.create_db("crash")
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("CREATE TABLE ev (id bigserial PRIMARY KEY, n int NOT NULL)")
        db.execute(f"INSERT INTO ev (n) SELECT 0 FROM generate_series(1, {INITIAL})")
    stop, inserted = threading.Event(), []
    srv = Server(tmp_path / "data").start()
    thread = threading.Thread(target=writer, args=(dsn, stop, inserted))
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=EVENTS).status_code == 201
            spec = {"name": "ev", "kind": "postgres_cdc", "stream": "events",
                    "config": {"dsn": dsn, "tables": ["ev"], "batch_rows": 100,
                               "poll_ms": 20}}  # fmt: skip
            thread.start()
            assert c.post("/v1/sources", json=spec).status_code == 201
            at_kill = wait_for(lambda: (v := c.get("/v1/sources/ev").json())["rows_in"] >= 300
                               and v)  # fmt: skip
            assert at_kill["position"].startswith("snapshot:0:"), at_kill
        srv.kill()
        srv.start()
        with srv.client() as c:
            after = wait_for(lambda: (v := c.get("/v1/sources/ev").json())["position"]
                             and "/" in v["position"] and v["rows_in"] > 500 and v)  # fmt: skip
            assert after, c.get("/v1/sources/ev").json()
        srv.kill()
        srv.start()
        stop.set()
        thread.join()
        with psycopg.connect(dsn) as db:
            truth = dict(db.execute("SELECT id, n FROM ev").fetchall())
        with srv.client() as c:
            wait_for(lambda: replayed(c) == truth, 60)
            state = replayed(c)
            wrong = {i: (truth.get(i), state.get(i)) for i in truth.keys() | state.keys()
                     if truth.get(i) != state.get(i)}  # fmt: skip
            assert not wrong, (len(wrong), sorted(wrong.items())[:10])
            assert c.get("/v1/sources/ev").json()["status"] == "running"
            # no row read twice by the snapshots, no change twice, every insert once
            snap = query(c, "SELECT count(*), count(DISTINCT id) FROM events WHERE op = 'snapshot'")
            assert snap[0][0] == snap[0][1] >= INITIAL - 100, snap
            twice = query(c, "SELECT id, op, lsn FROM events WHERE op <> 'snapshot' "
                             "GROUP BY ALL HAVING count(*) > 1 LIMIT 5")  # fmt: skip
            assert twice == []
            inserts = [i for (i,) in query(c, "SELECT id FROM events WHERE op = 'insert'")]
            early = query(c, f"SELECT id FROM events WHERE op = 'snapshot' AND id > {INITIAL}")
            assert len(inserts) == len(set(inserts))  # (rows inserted before the slot was
            assert set(inserts) | {i for (i,) in early} == set(inserted)  # made: snapshot)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        srv.stop()
