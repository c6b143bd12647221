"""The demo profile: a simulated IoT fleet, a ``readings`` stream and sample pipelines.

Also serves the classic demo endpoints (``/api/v1/health``, ``/api/v1/start-ingestion``,
``/api/v1/stop-ingestion``, ``/api/v1/raw-data``, ``/api/v1/processed-data``), which
need no key: the demo is for a local machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from headwater.api.render import json_response
from headwater.connectors.sources.simulator import CATEGORIES, Simulator, SimulatorConfig
from headwater.errors import BadRequest, NotFound
from headwater.model.schema import schema_from_dict
from headwater.services import DEFAULT_TENANT, Platform

STREAM = {
    "name": "readings",
    "description": "Simulated IoT sensor readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "category", "type": "string", "required": True, "enum": list(CATEGORIES)},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "value", "type": "float"},
        {"name": "temperature", "type": "float", "min": -50, "max": 150},
        {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
        {"name": "event_id", "type": "string"},
    ],
    "event_time": "ts",
    "key": ["device_id"],
    "id": "event_id",
}

PIPELINES = {
    "device_minute": """CREATE PIPELINE device_minute AS
SELECT device_id, window_start, window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp,
       approx_quantile(temperature, 0.99) AS p99_temp, avg(value) AS avg_value
FROM TUMBLE(readings, ts, INTERVAL '1 minute')
WHERE status <> 'error'
GROUP BY device_id, window_start, window_end
WITH (watermark_delay = '5 seconds', allowed_lateness = '1 minute', emit = 'changes')""",
    "category_stats": """CREATE PIPELINE category_stats AS
SELECT category, avg(value) AS avg_value, count(*) AS count, max(ts) AS last_timestamp
FROM readings
GROUP BY category
WITH (emit = 'changes')""",
    "anomalies": """CREATE PIPELINE anomalies AS
SELECT device_id, category, ts, value, temperature,
       CASE WHEN value < 0 THEN 'negative' ELSE 'spike' END AS kind
FROM readings
WHERE status = 'warn' OR value < 0""",
}

router = APIRouter(prefix="/api/v1", tags=["demo"])


def _demo(request: Request) -> tuple[Platform, Simulator]:
    return request.app.state.platform, request.app.state.simulator


@router.get("/health")
async def demo_health(request: Request) -> Response:
    _p, sim = _demo(request)
    return json_response({"status": "ok", "ingestion": "running" if sim.running else "stopped",
                          "events_sent": sim.sent})  # fmt: skip


@router.api_route("/start-ingestion", methods=["POST", "GET"])
async def start_ingestion(request: Request) -> Response:
    _, sim = _demo(request)
    started = sim.start()
    return json_response(
        {"status": "started" if started else "already_running", "rate": sim.config.rate}
    )


@router.api_route("/stop-ingestion", methods=["POST", "GET"])
async def stop_ingestion(request: Request) -> Response:
    _, sim = _demo(request)
    stopped = await sim.stop()
    return json_response(
        {"status": "stopped" if stopped else "already_stopped", "events_sent": sim.sent}
    )


@router.get("/raw-data")
async def raw_data(request: Request, limit: int = 100) -> Response:
    """The latest raw readings, newest first."""
    if not 1 <= limit <= 10_000:
        raise BadRequest("limit must be from 1 to 10000", code="bad_limit")
    p, _ = _demo(request)
    st = p.streams.get(DEFAULT_TENANT, "readings")
    await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic), timeout_s=2.0)
    rows = await asyncio.to_thread(
        p.store.sql, DEFAULT_TENANT,
        f"SELECT device_id, category, ts AS timestamp, value, temperature, status, event_id "
        f"FROM readings ORDER BY ts DESC LIMIT {int(limit)}",
        max_rows=limit, timeout_s=10,
    )  # fmt: skip
    data = rows.to_pylist()
    return json_response({"data": data, "count": len(data)})


@router.get("/processed-data")
async def processed_data(request: Request) -> Response:
    """Per category: average value, count and the latest event time."""
    p, _ = _demo(request)
    try:
        rows = await asyncio.to_thread(
            p.store.sql, DEFAULT_TENANT,
            "SELECT category, avg_value, count, last_timestamp FROM category_stats ORDER BY category",
            max_rows=1000, timeout_s=10,
        )  # fmt: skip
        data: list[dict[str, Any]] = rows.to_pylist()
    except NotFound:
        data = []
    return json_response({"data": data, "count": len(data)})


def install(app: FastAPI, platform: Platform) -> None:
    """Create the demo stream and pipelines if missing; start the simulator with the app."""
    now = platform.clock.now_ms()
    tenant = DEFAULT_TENANT
    if not any(s.schema.name == "readings" for s in platform.streams.in_tenant(tenant)):
        platform.streams.create(
            tenant, schema_from_dict(STREAM), now, taken=platform.occupied_tables(tenant)
        )
    st = platform.streams.get(tenant, "readings")
    ss = platform.settings
    cfg = SimulatorConfig(
        devices=ss.demo_devices, rate=ss.demo_rate, anomaly_rate=ss.demo_anomaly_rate,
        disorder_ms=ss.demo_disorder_ms, late_rate=ss.demo_late_rate, malformed_rate=ss.demo_malformed_rate,
    )  # fmt: skip

    async def sink(body: bytes) -> None:
        await platform.ingest.ingest(
            st, body, "application/x-ndjson", None, None, "simulator", "simulator"
        )

    sim = Simulator(cfg, sink, platform.clock.now_ms)
    app.state.simulator = sim
    app.include_router(router)

    async def start() -> None:
        mgr = app.state.pipelines
        for name, sql in PIPELINES.items():
            if name not in mgr.names(tenant):
                await asyncio.to_thread(mgr.create, tenant, sql)
        sim.start()

    async def stop() -> None:
        await sim.stop()

    app.state.on_start.append(start)
    app.state.on_stop.append(stop)
