"""`headwater demo`: the simulator streams in, the sample pipelines run, the classic endpoints answer."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from serverproc import Server


def test_demo_profile_end_to_end(tmp_path: Path) -> None:
    srv = Server(
        tmp_path / "data",
        command="demo",
        HEADWATER_DEMO_RATE="500",
        HEADWATER_DEMO_MALFORMED_RATE="0.05",
    ).start()
    try:
        base = srv.url + "/api/v1"
        health = httpx.get(base + "/health").json()
        assert health["status"] == "ok"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            data = httpx.get(base + "/processed-data").json()["data"]
            if len(data) == 4 and all(d["count"] > 0 for d in data):
                break
            time.sleep(0.3)
        assert sorted(d["category"] for d in data) == [
            "humidity",
            "pressure",
            "temperature",
            "vibration",
        ]
        assert all(isinstance(d["avg_value"], float) and d["last_timestamp"] for d in data)
        raw = httpx.get(base + "/raw-data", params={"limit": 5}).json()
        assert raw["count"] == 5 and {"device_id", "category", "timestamp", "value"} <= set(
            raw["data"][0]
        )
        assert httpx.post(base + "/stop-ingestion").json()["status"] == "stopped"
        sent = httpx.get(base + "/health").json()["events_sent"]
        time.sleep(0.6)
        assert httpx.get(base + "/health").json()["events_sent"] == sent
        assert httpx.get(base + "/health").json()["ingestion"] == "stopped"
        assert httpx.post(base + "/start-ingestion").json()["status"] == "started"
        with srv.client() as c:
            # the counts add up: every simulated event is stored, quarantined or a duplicate
            stream = c.get("/v1/streams/readings").json()
            assert stream["quarantined"] > 0
            names = {p["name"]: p for p in c.get("/v1/pipelines").json()["pipelines"]}
            assert set(names) == {"device_minute", "category_stats", "anomalies"}
            assert all(p["status"] == "running" for p in names.values())
            assert names["device_minute"]["metrics"]["rows_out"] > 0
            rows = c.get("/v1/tables/device_minute/rows", params={"limit": 5}).json()["rows"]
            assert rows and {"device_id", "window_start", "n", "avg_temp", "p99_temp"} <= set(
                rows[0]
            )
    finally:
        srv.stop()
