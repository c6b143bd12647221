"""Pipelines share a fixed pool of threads: the hundredth costs no more threads than the first."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from serverproc import Server

STREAM = {
    "name": "r",
    "fields": [
        {"name": "k", "type": "string"},
        {"name": "ts", "type": "timestamp"},
        {"name": "v", "type": "float"},
    ],
    "event_time": "ts",
}


def threads(server: Server) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as fh:
        line = next(x for x in fh if x.startswith("Threads:"))
    return int(line.split()[1])


def test_many_pipelines_run_on_a_fixed_pool_of_threads(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", HEADWATER_QUOTA_PIPELINES="0").start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            sqls = [
                lambda i: f"CREATE PIPELINE s{i} AS SELECT k, v * {i} AS w FROM r",
                lambda i: (
                    f"CREATE PIPELINE w{i} AS SELECT k, window_start, count(*) AS n "
                    "FROM TUMBLE(r, ts, INTERVAL '1 minute') GROUP BY k, window_start, window_end"
                ),
            ]
            body = b"\n".join(
                orjson.dumps({"k": f"d{i % 5}", "ts": "2026-12-01T10:00:00Z", "v": 1.0})
                for i in range(100)
            )
            headers = {"Content-Type": "application/x-ndjson"}
            for make in sqls:  # the first of each kind may start shared machinery
                assert c.post("/v1/pipelines", json={"sql": make(0)}).status_code == 201
            for _ in range(3):  # so do the first requests (their thread pools)
                assert c.post("/v1/streams/r/events", content=body, headers=headers).is_success
                c.post("/v1/query", json={"sql": "SELECT count(*) FROM s0"})
                c.get("/v1/pipelines/w0")
            before = threads(server)
            for i in range(1, 31):
                for make in sqls:
                    assert c.post("/v1/pipelines", json={"sql": make(i)}).status_code == 201
            r = c.post("/v1/streams/r/events", content=body, headers=headers)
            assert r.json()["accepted"] == 100
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                done = c.post("/v1/query", json={"sql": "SELECT count(*) FROM s30"}).json()
                if done["rows"][0][0] == 400:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the last pipeline did not process its rows")
            statuses = {p["status"] for p in c.get("/v1/pipelines").json()["pipelines"]}
            assert statuses == {"running"}
            assert threads(server) - before <= 4  # 60 more pipelines: before, 120 more threads
    finally:
        server.stop()
