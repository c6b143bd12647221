"""G2 with event ids: kill -9 the server while clients send batches that carry event ids,
retrying (and re-sending the same ids) until answered; every id is stored exactly once.

The id index is made to spill to disk every few hundred ids, so restarts go through its
on-disk runs, its filter and the log tail past what they cover."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import orjson

from serverproc import READINGS, TRUST, Server


def _client(
    url: str, key: str, start: int, batches: int, acked: list[int],
    progress: threading.Condition | None = None,
) -> None:  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    deadline = time.monotonic() + 120
    # One client per sender: a client per attempt costs ~20 ms of CPU (TLS setup) each
    # time, slowing the very restarts the senders wait for.
    with httpx.Client(base_url=url, headers=headers, timeout=5, verify=TRUST) as client:
        for b in range(batches):
            ids = range(start + b * 50, start + (b + 1) * 50)
            body = b"\n".join(
                orjson.dumps({"device_id": "d", "ts": "2026-11-21T10:00:00Z", "event_id": f"e{i}"})
                for i in ids
            )
            while time.monotonic() < deadline:  # no Idempotency-Key: only the ids dedup retries
                try:
                    r = client.post("/v1/streams/readings/events", content=body)
                    if r.status_code == 200:
                        acked.extend(ids)
                        if progress is not None:
                            with progress:
                                progress.notify_all()
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)


def test_kill9_with_event_ids_stores_each_id_once(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_ID_SPILL_IDS="300").start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
    acked: list[int] = []
    key = "hw_test_admin_key_0123456789abcdef"
    progress = threading.Condition()
    threads = [
        threading.Thread(target=_client, args=(srv.url, key, k * 100_000, 40, acked, progress))
        for k in range(3)
    ]
    for t in threads:
        t.start()
    rng = random.Random(11)
    for _ in range(4):
        # killed after a random number of bodies (1 to 6) acknowledged since the last start
        want = len(acked) + rng.randint(1, 6) * 50
        with progress:
            progress.wait_for(lambda want=want: len(acked) >= want, timeout=60)
        srv.kill()
        srv.start()
    for t in threads:
        t.join(150)
    assert len(acked) == 3 * 40 * 50, "clients did not finish"
    srv.kill()
    srv.start()
    try:
        with srv.client() as c:
            # Re-sending everything after the last restart stores nothing new.
            _client(srv.url, key, 0, 40, [])
            deadline = time.monotonic() + 30
            while True:
                q = c.post("/v1/query", json={"sql": "SELECT event_id FROM readings"}).json()
                stored = [row[0] for row in q["rows"]]
                if len(stored) >= len(acked) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert len(stored) == len(set(stored)), "an event id was stored twice"
            assert sorted(stored) == sorted(f"e{i}" for i in acked)
    finally:
        srv.stop()
