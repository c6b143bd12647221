"""G1 + G2: kill -9 the server while clients ingest with retries; nothing acked is lost or doubled."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from serverproc import READINGS, Server


def _client_loop(
    url: str,
    key: str,
    start: int,
    batches: int,
    rows: int,
    acked: list[int],
    stop: threading.Event,
) -> None:
    """Send batches with an Idempotency-Key; retry each until it is answered 200."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
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
                r = httpx.post(f"{url}/v1/streams/crash/events", content=body,
                               headers={**headers, "Idempotency-Key": f"batch-{start}-{b}"}, timeout=5)  # fmt: skip
                if r.status_code == 200:
                    assert r.json()["accepted"] == rows, r.text
                    acked.extend(ids)
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)


# 50-row bodies are ingested one request at a time; 5-row bodies of concurrent clients
# share log entries (``ingest/coalesce.py``), whose meta holds several keys' answers.
@pytest.mark.parametrize("rows", [50, 5])
def test_kill9_during_ingest_loses_and_doubles_nothing(tmp_path: Path, rows: int) -> None:
    srv = Server(tmp_path / "data").start()
    schema = {**READINGS, "name": "crash", "id": None,
              "fields": [*(f for f in READINGS["fields"] if f["name"] != "event_id"), {"name": "seq", "type": "int"}]}  # fmt: skip
    with srv.client() as c:
        assert c.post("/v1/streams", json=schema).status_code == 201
    acked: list[int] = []
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(
                srv.url,
                "hw_test_admin_key_0123456789abcdef",
                k * 100_000,
                40,
                rows,
                acked,
                stop,
            ),
        )
        for k in range(3)
    ]
    for t in threads:
        t.start()
    rng = random.Random(7)
    for _ in range(4):
        time.sleep(rng.uniform(0.3, 1.0))
        srv.kill()
        time.sleep(0.1)
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
