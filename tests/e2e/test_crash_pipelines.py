"""Exactly-once results: kill -9 the server repeatedly while pipelines run; results equal batch."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import orjson

from serverproc import ADMIN_KEY, TRUST, Server

STREAM = {
    "name": "seqs",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "seq", "type": "int", "required": True},
    ],
    "event_time": "ts",
    "key": ["device_id"],
}
PIPELINES = [
    "CREATE PIPELINE totals AS SELECT device_id, count(*) AS n, sum(seq) AS s, max(seq) AS hi "
    "FROM seqs GROUP BY device_id WITH (emit = 'changes')",
    "CREATE PIPELINE per_min AS SELECT device_id, window_start, count(*) AS n, sum(seq) AS s "
    "FROM TUMBLE(seqs, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, window_end "
    "WITH (emit = 'final', watermark_delay = '1 second')",
]


def _producer(url: str, batches: int, stop: threading.Event, done: list[int]) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/x-ndjson"}
    # One client for the run: a client per attempt costs ~20 ms of CPU (TLS setup) each
    # time, slowing the very restarts the producer waits for.
    with httpx.Client(base_url=url, headers=headers, timeout=5, verify=TRUST) as client:
        for b in range(batches):
            rows = [{"device_id": f"d{k}", "ts": f"2026-11-21T10:{(b * 20 + k) // 60 % 60:02d}:{(b * 20 + k) % 60:02d}Z",
                     "seq": b * 20 + k} for k in range(20)]  # fmt: skip
            body = b"\n".join(orjson.dumps(r) for r in rows)
            while not stop.is_set():
                try:
                    r = client.post("/v1/streams/seqs/events", content=body,
                                    headers={"Idempotency-Key": f"b{b}"})  # fmt: skip
                    if r.status_code == 200:
                        done.append(b)
                        break
                except httpx.HTTPError:
                    pass
                stop.wait(0.05)  # the server is restarting: try again shortly


def test_kill9_while_pipelines_run_gives_batch_results(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data").start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        for sql in PIPELINES:
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
    stop = threading.Event()
    done: list[int] = []
    t = threading.Thread(target=_producer, args=(srv.url, 150, stop, done))
    t.start()
    rng = random.Random(11)
    for _ in range(4):
        time.sleep(rng.uniform(0.4, 1.2))
        srv.kill()
        srv.start()
    t.join(90)
    stop.set()
    assert len(done) == 150
    try:
        with srv.client() as c:
            # an event far ahead closes every 1-minute window of the run
            c.post(
                "/v1/streams/seqs/events",
                json={"device_id": "flush", "ts": "2026-11-21T12:00:00Z", "seq": -1},
            )
            ref = c.post("/v1/query", json={"sql": "SELECT device_id, count(*), sum(seq), max(seq) FROM seqs "
                                                   "WHERE seq >= 0 GROUP BY 1 ORDER BY 1"}).json()["rows"]  # fmt: skip
            assert sum(r[1] for r in ref) == 150 * 20
            ref_min = c.post("/v1/query", json={"sql": "SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS w, "
                                                       "count(*), sum(seq) FROM seqs WHERE seq >= 0 GROUP BY 1, 2 ORDER BY 1, 2"}).json()["rows"]  # fmt: skip
            deadline = time.monotonic() + 30
            while True:
                got = c.post(
                    "/v1/query",
                    json={
                        "sql": "SELECT device_id, n, s, hi FROM totals WHERE device_id <> 'flush' ORDER BY 1"
                    },
                ).json()["rows"]
                got_min = c.post(
                    "/v1/query",
                    json={"sql": "SELECT device_id, window_start, n, s FROM per_min ORDER BY 1, 2"},
                ).json()["rows"]
                if (got == ref and got_min == ref_min) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert got == ref
            assert got_min == ref_min
            for name in ("totals", "per_min"):
                assert c.get(f"/v1/pipelines/{name}").json()["status"] == "running"
    finally:
        srv.stop()
