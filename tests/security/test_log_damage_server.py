"""G1 through a real server: a damaged log stops the start with a clear line, and after
``headwater log repair`` the server starts and never re-uses an offset it had stored."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from serverproc import Server

STREAM = {
    "name": "damaged",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "seq", "type": "int"},
    ],
    "event_time": "ts",
}
TOPIC_DIR = "log/default.damaged"


def send(srv: Server, start: int, n: int) -> None:
    body = b"\n".join(
        orjson.dumps({"device_id": "d", "ts": "2026-11-21T10:00:00Z", "seq": i})
        for i in range(start, start + n)
    )
    with srv.client() as c:
        r = c.post("/v1/streams/damaged/events", content=body,
                   headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert r.status_code == 200 and r.json()["accepted"] == n, r.text


def stored(srv: Server, expected: int) -> list[int]:
    """The stored seq values, once ``expected`` rows are stored (or the deadline passes)."""
    deadline = time.monotonic() + 30
    while True:
        with srv.client() as c:
            rows = c.post("/v1/query", json={"sql": "SELECT seq FROM damaged"}).json()["rows"]
        if len(rows) >= expected or time.monotonic() > deadline:
            return sorted(r[0] for r in rows)
        time.sleep(0.05)


def headwater(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def last_segment(data: Path) -> Path:
    return max((data / TOPIC_DIR).glob("*.log"))


def flip_middle(data: Path) -> None:
    seg = last_segment(data)
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 0x20
    seg.write_bytes(bytes(raw))


def cut_tail(data: Path) -> None:
    seg = last_segment(data)
    seg.write_bytes(seg.read_bytes()[: seg.stat().st_size // 2])


@pytest.mark.slow
@pytest.mark.parametrize("damage", [flip_middle, cut_tail], ids=["flip", "truncate"])
def test_damage_refuses_to_start_and_repair_never_reuses_offsets(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    srv = Server(data).start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
    for k in range(6):
        send(srv, k * 100, 100)
    assert stored(srv, 600) == list(range(600))
    srv.stop()

    damage(data)
    with pytest.raises(RuntimeError, match="server exited with 2"):
        Server(data, port=srv.port).start()
    output = srv.log_path.read_text()
    assert "Traceback" not in output
    [line] = [x for x in output.splitlines() if x.startswith("headwater: cannot start:")]
    assert "default.damaged" in line and "offset" in line and "headwater log repair" in line

    verify = headwater("log", "verify", "--data-dir", str(data))
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "default.damaged: DAMAGED" in verify.stdout
    repair = headwater("log", "repair", "--data-dir", str(data))
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "default.damaged: LOST offsets" in repair.stdout
    assert "already read by default/materialize:damaged" in repair.stdout
    assert "default.damaged: the next event gets offset 600" in repair.stdout
    assert headwater("log", "verify", "--data-dir", str(data)).returncode == 0

    srv = Server(data, port=srv.port).start()
    try:
        send(srv, 1000, 50)
        # Every row stored before the damage is still there, and the new ones too: the
        # new events did not get offsets the store had already consumed.
        assert stored(srv, 650) == [*range(600), *range(1000, 1050)]
    finally:
        srv.stop()
