"""A real server on a real, small file system: when the disk fills up, ingest answers 503
and ``/ready`` says why; once space is freed the server takes events again by itself —
no restart — and every acknowledged event is stored.

The file system is a 24 MiB tmpfs that the test mounts in a private mount namespace of
the server process (``unshare --user --map-root-user --mount``: no root needed where
user namespaces are allowed). The test reaches into it through ``/proc/<pid>/root``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from serverproc import Server

STREAM = {
    "name": "full",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "seq", "type": "int"},
        {"name": "pad", "type": "string"},
    ],
    "event_time": "ts",
}


class TmpfsServer(Server):
    """``headwater serve`` with its data directory on a private tmpfs of ``size``."""

    def __init__(self, mount: Path, size: str) -> None:
        super().__init__(mount / "data")
        self.mount, self.size = mount, size

    def _spawn(self, env: dict[str, str], log: Any) -> Any:
        import subprocess
        import sys

        script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
        return subprocess.Popen(
            ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
             self.size, str(self.mount), sys.executable, "-m", "headwater.cli.main", "serve",
             "--port", str(self.port), "--data-dir", str(self.data_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def inside(self, path: Path) -> Path:
        """``path`` as the server sees it, on its private file system."""
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root{path}")


def body(start: int, n: int) -> bytes:
    return b"\n".join(
        orjson.dumps({"device_id": "d", "ts": "2026-11-21T10:00:00Z", "seq": i, "pad": "x" * 200})
        for i in range(start, start + n)
    )


def post(c: httpx.Client, start: int, n: int) -> httpx.Response:
    return c.post("/v1/streams/full/events", content=body(start, n),
                  headers={"Content-Type": "application/x-ndjson"})  # fmt: skip


def wait_for(condition, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_disk_full_answers_503_and_recovers_without_a_restart(tmp_path: Path) -> None:
    mount = tmp_path / "fs"
    mount.mkdir()
    srv = TmpfsServer(mount, "24m").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            filler = srv.inside(mount / "filler")
            stats = os.statvfs(filler.parent)
            with open(filler, "wb") as fh:  # leave about 2 MiB free
                fh.write(bytes(max(stats.f_bavail * stats.f_frsize - 2 * 1024 * 1024, 0)))
            acked: list[int] = []
            for k in range(200):
                r = post(c, k * 1000, 1000)
                if r.status_code != 200:
                    break
                acked += range(k * 1000, k * 1000 + 1000)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "log_disk_full" and "Retry-After" in r.headers
            ready = c.get("/ready")
            assert ready.status_code == 503 and not ready.json()["checks"]["log"]["ok"]

            filler.unlink()  # space is freed: no restart from here on
            wait_for(lambda: c.get("/ready").status_code == 200)
            r = post(c, 10**6, 1000)
            assert r.status_code == 200, r.text
            acked += range(10**6, 10**6 + 1000)

            def all_stored() -> bool:
                q = c.post("/v1/query", json={"sql": "SELECT count(*) FROM full"}).json()
                return bool(q["rows"][0][0] >= len(acked))

            wait_for(all_stored)
            q = c.post("/v1/query", json={"sql": "SELECT seq FROM full ORDER BY seq"}).json()
            assert [row[0] for row in q["rows"]] == acked
    finally:
        srv.stop()
