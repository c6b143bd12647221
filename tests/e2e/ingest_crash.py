"""G1 + G2 under kill -9: clients ingest with retries while the server is killed and
restarted; nothing acknowledged is lost or doubled. Shared by the two crash-ingest test
files (one request per log entry, and requests coalesced into shared entries), which are
two files so that test runs can run them side by side."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import orjson

from serverproc import ADMIN_KEY, READINGS, TRUST, Server


def _client_loop(
    url: str,
    key: str,
    start: int,
    batches: int,
    rows: int,
    acked: list[int],
    stop: threading.Event,
    progress: threading.Condition,
) -> None:
    """Send batches with an Idempotency-Key; retry each until it is answered 200."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    # One client per sender: a client per attempt would spend ~20 ms of CPU on TLS setup
    # each time, slowing the very restarts the senders wait for.
    with httpx.Client(base_url=url, headers=headers, timeout=5, verify=TRUST) as client:
        for b in range(batches):
            ids = range(start + b * rows, start + (b + 1) * rows)
            # no event id: only the Idempotency-Key protects against double counting
            body = b"\n".join(
                orjson.dumps(
                    {
                        "device_id": f"d{i % 7}",
                        "ts": "2026-11-21T10:00:00Z",
                        "temperature": i % 100,
                        "seq": i,
                    }
                )
                for i in ids
            )
            while not stop.is_set():
                try:
                    r = client.post("/v1/streams/crash/events", content=body,
                                    headers={"Idempotency-Key": f"batch-{start}-{b}"})  # fmt: skip
                    if r.status_code == 200:
                        assert r.json()["accepted"] == rows, r.text
                        with progress:
                            acked.extend(ids)
                            progress.notify_all()
                        break
                except httpx.HTTPError:
                    pass
                stop.wait(0.05)  # the server is restarting: try again shortly


def kill9_during_ingest(tmp_path: Path, rows: int) -> None:
    """Three clients send 40 bodies of ``rows`` rows each while the server is killed four
    times; after a last kill every acknowledged row is stored exactly once."""
    srv = Server(tmp_path / "data").start()
    schema = {**READINGS, "name": "crash", "id": None,
              "fields": [*(f for f in READINGS["fields"] if f["name"] != "event_id"), {"name": "seq", "type": "int"}]}  # fmt: skip
    with srv.client() as c:
        assert c.post("/v1/streams", json=schema).status_code == 201
    acked: list[int] = []
    stop, progress = threading.Event(), threading.Condition()
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(srv.url, ADMIN_KEY, k * 100_000, 40, rows, acked, stop, progress),
        )
        for k in range(3)
    ]
    for t in threads:
        t.start()
    rng = random.Random(7)
    for _ in range(4):
        # killed after a random number of bodies (1 to 6) acknowledged since the last start
        want = len(acked) + rng.randint(1, 6) * rows
        with progress:
            progress.wait_for(lambda want=want: len(acked) >= want, timeout=60)
        srv.kill()  # returns once the process is gone
        srv.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(max(0.1, deadline - time.monotonic()))
    stop.set()
    assert len(acked) == 3 * 40 * rows, "clients did not finish"
    srv.kill()  # and once more, after the last ack
    srv.start()
    try:
        with srv.client() as c:
            q = c.post("/v1/query", json={"sql": "SELECT seq FROM crash"}).json()
            stored = [r[0] for r in q["rows"]]
            assert len(stored) == len(acked), "rows lost or doubled"
            assert sorted(stored) == sorted(acked)
    finally:
        srv.stop()
