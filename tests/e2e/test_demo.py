"""`headwater demo`: the simulator streams in, the sample pipelines run, the classic endpoints answer.

The classic endpoints (``/api/v1/...``) answer exactly as the well-known tutorial API does, so
clients written for it work unchanged: plain lists, ``{"status": "healthy"}``, ``message``s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from serverproc import Server

CATEGORIES = ["humidity", "pressure", "temperature", "vibration"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("demo") / "data",
        command="demo",
        HEADWATER_DEMO_RATE="500",
        HEADWATER_DEMO_MALFORMED_RATE="0.05",
    ).start()
    yield srv
    srv.stop()


def _api(srv: Server) -> str:
    return srv.url + "/api/v1"


def _processed(srv: Server) -> list[dict[str, Any]]:
    """The processed data once every category has rows (the pipelines start with the server)."""
    deadline = time.monotonic() + 30
    while True:
        data: list[dict[str, Any]] = httpx.get(_api(srv) + "/processed-data").json()
        if (len(data) == 4 and all(d["count"] > 0 for d in data)) or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def _iso(value: object) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def test_health_is_healthy_and_ingestion_runs_from_the_start(demo: Server) -> None:
    r = httpx.get(_api(demo) + "/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"
    assert r.json()["ingestion"] == "running"


def test_processed_data_is_a_list_of_category_aggregates(demo: Server) -> None:
    data = _processed(demo)
    assert isinstance(data, list)
    assert sorted(d["category"] for d in data) == CATEGORIES
    for row in data:
        assert set(row) == {"category", "avg_value", "count", "last_timestamp"}
        assert isinstance(row["avg_value"], float)
        assert isinstance(row["count"], int) and not isinstance(row["count"], bool)
        assert _iso(row["last_timestamp"]).tzinfo is not None


def test_processed_data_filters_by_category_and_limits(demo: Server) -> None:
    _processed(demo)
    only = httpx.get(_api(demo) + "/processed-data", params={"category": "pressure"}).json()
    assert [d["category"] for d in only] == ["pressure"]
    assert len(httpx.get(_api(demo) + "/processed-data", params={"limit": 2}).json()) == 2


def test_raw_data_is_a_list_of_readings_newest_first(demo: Server) -> None:
    _processed(demo)
    raw = httpx.get(_api(demo) + "/raw-data", params={"limit": 5}).json()
    assert isinstance(raw, list) and len(raw) == 5
    for row in raw:
        assert {"timestamp", "value", "category", "device_id"} <= set(row)
        assert isinstance(row["value"], float)
        assert row["category"] in CATEGORIES
        assert _iso(row["timestamp"]).tzinfo is not None
    stamps = [_iso(r["timestamp"]) for r in raw]
    assert stamps == sorted(stamps, reverse=True)
    default = httpx.get(_api(demo) + "/raw-data").json()
    assert isinstance(default, list) and len(default) == 100


def test_raw_data_filters_by_category(demo: Server) -> None:
    _processed(demo)
    raw = httpx.get(_api(demo) + "/raw-data", params={"category": "humidity", "limit": 20}).json()
    assert len(raw) == 20 and {r["category"] for r in raw} == {"humidity"}


@pytest.mark.parametrize("path", ["/raw-data", "/processed-data"])
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"limit": "abc"}, "invalid_request"),
        ({"limit": "0"}, "bad_limit"),
        ({"limit": "-3"}, "bad_limit"),
        ({"limit": "100001"}, "bad_limit"),
        ({"category": "nope"}, "unknown_category"),
    ],
)
def test_bad_filters_answer_400_with_a_code(
    demo: Server, path: str, params: dict[str, str], code: str
) -> None:
    r = httpx.get(_api(demo) + path, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/start-ingestion", "/stop-ingestion"])
def test_start_and_stop_refuse_get(demo: Server, path: str) -> None:
    r = httpx.get(_api(demo) + path)
    assert r.status_code == 405
    assert "POST" in r.headers["allow"]


def test_stop_and_start_answer_with_messages_twice(demo: Server) -> None:
    base = _api(demo)
    try:
        for _ in range(2):
            r = httpx.post(base + "/stop-ingestion")
            assert r.status_code == 200 and r.json()["message"] == "Data ingestion stopped"
        assert httpx.get(base + "/health").json()["ingestion"] == "stopped"
        sent = httpx.get(base + "/health").json()["events_sent"]
        time.sleep(0.6)  # a window in which a running simulator would send ~300 events
        assert httpx.get(base + "/health").json()["events_sent"] == sent
    finally:
        for _ in range(2):
            r = httpx.post(base + "/start-ingestion")
            assert r.status_code == 200 and r.json()["message"] == "Data ingestion started"
    assert httpx.get(base + "/health").json()["ingestion"] == "running"


def test_demo_pipelines_run_and_the_counts_add_up(demo: Server) -> None:
    _processed(demo)
    with demo.client() as c:
        # every simulated event is stored, quarantined or a duplicate
        stream = c.get("/v1/streams/readings").json()
        assert stream["quarantined"] > 0
        names = {p["name"]: p for p in c.get("/v1/pipelines").json()["pipelines"]}
        assert set(names) == {"device_minute", "category_stats", "anomalies"}
        assert all(p["status"] == "running" for p in names.values())
        deadline = time.monotonic() + 20
        while not names["device_minute"]["metrics"]["rows_out"] and time.monotonic() < deadline:
            time.sleep(0.2)
            names = {p["name"]: p for p in c.get("/v1/pipelines").json()["pipelines"]}
        assert names["device_minute"]["metrics"]["rows_out"] > 0
        rows = c.get("/v1/tables/device_minute/rows", params={"limit": 5}).json()["rows"]
        assert rows and {"device_id", "window_start", "n", "avg_temp", "p99_temp"} <= set(rows[0])


def test_only_the_classic_endpoints_need_no_key(demo: Server) -> None:
    assert httpx.get(demo.url + "/v1/streams").status_code == 401


def test_the_anomalies_pipeline_flags_readings_far_off_their_device(demo: Server) -> None:
    with demo.client() as c:
        deadline = time.monotonic() + 60
        rows: list[dict] = []
        while not rows and time.monotonic() < deadline:
            rows = c.get("/v1/tables/anomalies/rows", params={"limit": 50}).json()["rows"]
            if not rows:
                time.sleep(0.5)
        assert rows, "no anomaly flagged within a minute of simulated readings"
        assert all(abs(r["z"]) > 4 for r in rows)  # the rule is_anomaly(value, 4) applies
        assert {r["kind"] for r in rows} <= {"negative", "spike"}


def test_the_anomaly_alert_fires_on_flagged_readings(demo: Server) -> None:
    with demo.client() as c:
        rule = c.get("/v1/alerts/anomaly").json()
        assert rule["from"] == "anomalies" and rule["key"] == "device_id"
        assert rule["channels"] == []
        deadline = time.monotonic() + 60
        fired: list[dict] = []
        while not fired and time.monotonic() < deadline:
            events = c.get("/v1/alerts/anomaly/events").json()["events"]
            fired = [e for e in events if e["kind"] == "fired"]
            if not fired:
                time.sleep(0.5)
        assert fired, "the anomaly rule did not fire within a minute of simulated readings"
        rule = c.get("/v1/alerts/anomaly").json()
        assert rule["error"] is None and rule["firing"] >= 1
        firing = [k for k in rule["keys"] if k["state"] == "firing"]
        assert firing and all(k["key"].startswith("dev-") for k in firing)
        assert all(abs(k["values"]["z"]) > 4 for k in firing)
        assert firing[0]["summary"].startswith(firing[0]["key"] + ": ")


def test_without_a_broker_url_the_demo_has_no_mqtt_source(demo: Server) -> None:
    with demo.client() as c:
        sources = c.get("/v1/sources").json()["sources"]
        assert [(s["name"], s["kind"]) for s in sources] == [("simulator", "simulator")]
        assert "fleet_telemetry" not in {s["name"] for s in c.get("/v1/streams").json()["streams"]}
