"""``headwater serve`` with ``HEADWATER_PIPELINE_WORKERS``: the workers are the server's
children, end with it (even when it is killed with SIGKILL), and a restarted server's
pipelines go on from their checkpoint with nothing lost or doubled."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serverproc import Server, children

STREAM = {"name": "events", "fields": [{"name": "k", "type": "string", "required": True},
                                       {"name": "v", "type": "int", "required": True}]}  # fmt: skip
SQL = ("CREATE PIPELINE totals AS SELECT k, count(*) AS n, sum(v) AS s FROM events "
       "GROUP BY k WITH (emit = 'changes')")  # fmt: skip


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def send(srv: Server, first: int, n: int) -> None:
    rows = "\n".join(f'{{"k": "k{i % 5}", "v": {i}}}' for i in range(first, first + n))
    with srv.client() as c:
        r = c.post("/v1/streams/events/events", content=rows,
                   headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert r.status_code == 200 and r.json()["accepted"] == n, r.text


def test_workers_end_with_a_killed_server_and_a_restart_goes_on_exactly(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_PIPELINE_WORKERS="1").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            assert c.post("/v1/pipelines", json={"sql": SQL}).status_code == 201
        assert srv.proc is not None
        server = srv.proc
        [worker] = wait(lambda: children(server.pid))
        send(srv, 0, 3000)
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert wait(lambda: not alive(worker)), "the worker outlived its server"
        srv.start()
        send(srv, 3000, 3000)
        want = sorted([f"k{j}", sum(1 for i in range(6000) if i % 5 == j),
                       sum(i for i in range(6000) if i % 5 == j)] for j in range(5))  # fmt: skip
        with srv.client() as c:

            def rows() -> list[list[Any]]:
                r = c.post("/v1/query", json={"sql": "SELECT k, n, s FROM totals ORDER BY k"})
                got: list[list[Any]] = r.json()["rows"]
                return got

            assert wait(lambda: rows() == want), (rows(), want)
            assert c.get("/v1/pipelines/totals").json()["status"] == "running"
        assert srv.proc is not None and len(children(srv.proc.pid)) == 1
    finally:
        srv.stop()
