"""Parquet sinks through a real server: files readable with pyarrow, equal to the stream's
rows, confined to the sink file root, and no duplicate file after kill -9."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from downstream import events, sink_status, wait_until
from serverproc import READINGS, Server


def tenant(server: Server, name: str) -> httpx.Client:
    """A client of a new tenant of the module's server (its own streams, sources, sinks)."""
    with server.client() as c:
        answer = c.post("/v1/tenants", json={"name": name})
        assert answer.status_code == 201, answer.text
    return server.client(answer.json()["admin_key"]["key"])


def files(d: Path) -> list[Path]:
    return sorted(d.glob("*.parquet"))


def read_all(d: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in files(d)])


def ingest(c: httpx.Client, n: int, start: int = 0) -> None:
    answer = c.post("/v1/streams/readings/events", json=events(n, start))
    assert answer.status_code == 200 and answer.json()["accepted"] == n, answer.text


def sink(path: Path, **config: Any) -> dict[str, Any]:
    return {"name": "archive", "kind": "parquet", "from": "readings",
            "config": {"path": str(path), **config}}  # fmt: skip


def test_files_hold_the_streams_rows(server: Server) -> None:
    out = server.data_dir / "exports" / "files_tenant"
    with tenant(server, "files_tenant") as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
        created = c.post("/v1/sinks", json=sink(out, batch_rows=100, batch_age_ms=100))
        assert created.status_code == 201, created.text
        for k in range(3):
            ingest(c, 90, start=90 * k)
        wait_until(lambda: sink_status(c, "archive")["delivered"] == 270, what="270 rows")
        st = sink_status(c, "archive")
        assert st["pending"] == 0 and st["dead_lettered"] == 0, st
        sql = "SELECT device_id, ts, temperature, status, event_id FROM readings ORDER BY event_id"
        want = c.post("/v1/query", json={"sql": sql}).json()["rows"]
    got = read_all(out)
    assert pa.types.is_timestamp(got.schema.field("ts").type)  # Arrow types kept
    assert not [n for n in got.column_names if n.startswith("_")]
    rows = sorted(got.to_pylist(), key=lambda r: r["event_id"])
    assert [[r["device_id"], r["ts"].strftime("%Y-%m-%dT%H:%M:%SZ"), r["temperature"],
             r["status"], r["event_id"]] for r in rows] == [
        [w[0], w[1].replace("+00:00", "Z").replace(".000", ""), w[2], w[3], w[4]] for w in want
    ]  # fmt: skip
    names = [f.name for f in files(out)]
    assert all(len(pq.read_table(out / n)) <= 100 for n in names)
    assert names[0] == "archive-00000000000000000000.parquet", names
    assert not list(out.glob(".*")), "no temporary file left"


def test_a_path_outside_the_root_is_refused(server: Server, tmp_path: Path) -> None:
    with server.client() as c:
        c.post("/v1/streams", json=READINGS)
        outside = c.post("/v1/sinks", json=sink(tmp_path / "elsewhere"))
        assert outside.status_code == 400, outside.text
        assert outside.json()["error"]["code"] == "path_not_allowed"
        assert "sink_file_root" in outside.json()["error"]["message"]
        relative = c.post("/v1/sinks", json=sink(Path("exports/x")))
        assert relative.status_code == 400 and "path" in relative.json()["error"]["message"]
        escape = server.data_dir / "exports" / ".." / ".." / "x"
        assert c.post("/v1/sinks", json=sink(escape)).status_code == 400


def test_kill_9_mid_export_leaves_no_duplicate(tmp_path: Path) -> None:
    """Killed while files are being written: the replay rewrites the file at the committed
    cursor under the same name, so every row is in exactly one file."""
    total = 6000
    srv = Server(tmp_path / "data").start()
    out = srv.data_dir / "exports" / "readings"
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            assert (
                c.post("/v1/sinks", json=sink(out, batch_rows=50, batch_age_ms=0)).status_code
                == 201
            )
            for k in range(total // 500):
                ingest(c, 500, start=500 * k)
            wait_until(lambda: len(files(out)) > 5, what="files written")
            assert sink_status(c, "archive")["delivered"] < total  # still writing
        srv.kill()
        srv.start()
        with srv.client() as c:
            wait_until(lambda: sink_status(c, "archive")["delivered"] == total, what="all rows")
    finally:
        srv.stop()
    ids = read_all(out).column("event_id").to_pylist()
    assert sorted(ids) == sorted(f"e{i}" for i in range(total))  # each row once
