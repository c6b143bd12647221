"""PostgreSQL sinks against a private cluster: upsert by key with the progress in the same
transaction, dead letters for rows the table refuses, kill -9 mid-delivery exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from pgcluster import PgCluster, wait_for
from serverproc import Server

STREAM = {
    "name": "readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float"},
        {"name": "seq", "type": "int"},
        {"name": "note", "type": "string"},
    ],
    "event_time": "ts",
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    c = PgCluster().start()
    yield c
    c.stop()


def send(c: httpx.Client, rows: list[dict[str, Any]]) -> None:
    body = b"\n".join(orjson.dumps(r) for r in rows)
    r = c.post("/v1/streams/readings/events", content=body,
               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert r.status_code == 200 and r.json()["accepted"] == len(rows), r.text


def row(i: int, devices: int, temp: float | None = None) -> dict[str, Any]:
    return {"device_id": f"d{i % devices}", "ts": "2026-03-04T05:06:07.250Z", "seq": i,
            "temperature": float(i % 90) if temp is None else temp, "note": f"n{i}"}  # fmt: skip


def status(c: httpx.Client, name: str) -> dict[str, Any]:
    st: dict[str, Any] = c.get(f"/v1/sinks/{name}").json()
    assert st["produced"] == st["delivered"] + st["dead_lettered"] + st["pending"], st
    return st


def table(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as db:
        return db.execute(sql).fetchall()


def test_upsert_by_key_with_progress_and_dead_letters(
    cluster: PgCluster, fresh_server: Server
) -> None:
    dsn = cluster.create_db("upserts")
    with psycopg.connect(dsn, autocommit=True) as db:  # a table of our own, with a check
        db.execute("CREATE TABLE latest (device_id text PRIMARY KEY, ts timestamptz, "
                   "temperature double precision CHECK (temperature < 100), seq bigint, "
                   "note text, extra text DEFAULT 'kept')")  # fmt: skip
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        bad = c.post("/v1/sinks", json={"name": "pg", "kind": "postgres", "from": "readings",
                                        "config": {"dsn": dsn}})  # fmt: skip
        assert bad.status_code == 400 and "key" in bad.text, bad.text
        spec = {"name": "pg", "kind": "postgres", "from": "readings",
                "config": {"dsn": dsn, "table": "latest", "key": ["device_id"],
                           "password": "unused", "batch_age_ms": 20}}  # fmt: skip
        created = c.post("/v1/sinks", json=spec)
        assert created.status_code == 201, created.text
        assert created.json()["config"]["password"] == "***"
        hot = c.post("/v1/pipelines", json={"sql": "CREATE PIPELINE hot AS SELECT device_id, "
                     "max(temperature) AS top FROM readings GROUP BY device_id WITH (emit = 'changes')"})  # fmt: skip
        assert hot.status_code in (200, 201), hot.text
        spec_hot = {"name": "pg_hot", "kind": "postgres", "from": "hot",
                    "config": {"dsn": dsn, "key": ["device_id"], "batch_age_ms": 20}}  # fmt: skip
        assert c.post("/v1/sinks", json=spec_hot).status_code == 201
        send(c, [row(i, 10) for i in range(50)])
        send(c, [row(50, 10, temp=120.0), row(51, 10, temp=None), {**row(52, 10), "note": ""}])
        send(c, [{**row(53, 10), "temperature": None, "note": None}])
        st = wait_for(lambda: (s := status(c, "pg"))["pending"] == 0 and s["produced"] == 54
                      and s)  # fmt: skip
        assert st["delivered"] == 53 and st["dead_lettered"] == 1, st
        got = table(dsn, "SELECT device_id, seq, temperature, note, extra, ts FROM latest "
                         "ORDER BY device_id")  # fmt: skip
        by_key = {r[0]: r[1:] for r in got}
        assert len(got) == 10
        assert by_key["d0"][:4] == (40, 40.0, "n40", "kept")  # d0's 50 was refused (check)
        assert by_key["d1"][:3] == (51, 51.0, "n51") and by_key["d2"][2] == ""
        assert by_key["d3"][:3] == (53, None, None)
        assert (
            by_key["d9"][0] == 49
            and by_key["d9"][4].isoformat() == "2026-03-04T05:06:07.250000+00:00"
        )
        progress = table(dsn, "SELECT next_offset, delivered, dead_lettered "
                              "FROM headwater_sink_progress WHERE sink LIKE '%/pg/%'")  # fmt: skip
        assert progress == [(54, 53, 1)]
        want = {"d0": 120.0, "d1": 51.0, "d2": 52.0, "d3": 43.0} | {
            f"d{k}": 40.0 + k for k in range(4, 10)
        }  # a pipeline's results, upserted as they change into a table the sink made
        wait_for(lambda: dict(table(dsn, "SELECT device_id, top FROM hot")) == want)
        assert dict(table(dsn, "SELECT device_id, top FROM hot")) == want
        dlq = c.post("/v1/query", json={"sql": "SELECT offset, state, error FROM pg_dlq"}).json()
        assert [r[:2] for r in dlq["rows"]] == [[50, "dead"]], dlq
        assert "latest_temperature_check" in dlq["rows"][0][2]
        with psycopg.connect(dsn, autocommit=True) as db:  # fixed: the dead letter replays
            db.execute("ALTER TABLE latest DROP CONSTRAINT latest_temperature_check")
        assert c.post("/v1/sinks/pg/dlq/replay", json={"all": True}).status_code == 200
        st = wait_for(lambda: (s := status(c, "pg"))["dead_lettered"] == 0 and s)
        assert st["delivered"] == 54
        assert table(dsn, "SELECT seq, temperature FROM latest WHERE device_id = 'd0'") == [
            (50, 120.0)
        ]
        assert table(
            dsn,
            "SELECT delivered, dead_lettered FROM headwater_sink_progress WHERE sink LIKE '%/pg/%'",
        ) == [(54, 0)]


@pytest.mark.parametrize("synchronous_commit", [True, False])
def test_creates_the_table_and_survives_kill_9_mid_delivery(
    cluster: PgCluster, tmp_path: Path, synchronous_commit: bool
) -> None:
    """The database crashes and the sink is killed while it works through a backlog: after
    the restarts every key is there once with its last value, and the progress counts
    every row once — also when commits are answered before they are flushed (a crash may
    lose the last ones, the rows and the progress together)."""
    dsn = cluster.create_db(f"crash_{synchronous_commit}".lower())
    total, devices = 60_000, 3000
    srv = Server(tmp_path / "data").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            spec = {"name": "pgc", "kind": "postgres", "from": "readings",
                    "config": {"dsn": dsn, "table": "public.devices", "key": ["device_id"],
                               "batch_rows": 1000, "batch_age_ms": 0,
                               "synchronous_commit": synchronous_commit}}  # fmt: skip
            assert c.post("/v1/sinks", json=spec).status_code == 201
            assert c.post("/v1/sinks/pgc/pause").status_code == 200
            for start in range(0, total, 10_000):
                send(c, [row(i, devices) for i in range(start, start + 10_000)])
            assert c.post("/v1/sinks/pgc/resume").status_code == 200
            assert wait_for(lambda: status(c, "pgc")["delivered"] >= 5000)
            cluster.crash()  # the database goes away mid-delivery, then comes back
            down = wait_for(lambda: (s := status(c, "pgc"))["reason"] and s)
            assert down["delivered"] < total and "connect" in down["reason"].lower(), down
            cluster.up()
            at_kill = wait_for(lambda: (s := status(c, "pgc"))["delivered"] >= 20_000 and s)
            assert at_kill["delivered"] < total, at_kill
        srv.kill()
        srv.start()
        with srv.client() as c:
            st = wait_for(lambda: (s := status(c, "pgc"))["delivered"] == total and s)
            assert st["delivered"] == total and st["pending"] == 0, st
        got = table(dsn, "SELECT device_id, seq FROM devices")
        assert len(got) == devices
        assert dict(got) == {f"d{k}": total - devices + k for k in range(devices)}
        assert table(dsn, "SELECT next_offset, delivered, dead_lettered "
                          "FROM headwater_sink_progress") == [(total, total, 0)]  # fmt: skip
    finally:
        srv.stop()
