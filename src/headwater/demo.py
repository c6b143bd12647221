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
       zscore(value) OVER (PARTITION BY device_id ORDER BY ts) AS z,
       anomaly_score(value, 'ewma', 0.1) OVER (PARTITION BY device_id ORDER BY ts) AS score,
       CASE WHEN value < 0 THEN 'negative' ELSE 'spike' END AS kind
FROM readings
WHERE status <> 'error' AND value IS NOT NULL
QUALIFY is_anomaly(value, 4) OVER (PARTITION BY device_id ORDER BY ts)""",
}

router = APIRouter(prefix="/api/v1", tags=["demo"])

MAX_LIMIT = 10_000


def _demo(request: Request) -> tuple[Platform, Simulator]:
    return request.app.state.platform, request.app.state.simulator


def _where(category: str | None) -> str:
    """A ``WHERE`` clause for the category filter; the value is checked against the known set."""
    if category is None:
        return ""
    if category not in CATEGORIES:
        raise BadRequest(
            f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}",
            code="unknown_category",
        )
    return f"WHERE category = '{category}'"


def _check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be from 1 to {MAX_LIMIT}, got {limit}", code="bad_limit")
    return limit


@router.get("/health")
async def demo_health(request: Request) -> Response:
    """``{"status": "healthy"}``, with the simulator's state and how many events it sent."""
    _p, sim = _demo(request)
    return json_response({"status": "healthy", "ingestion": "running" if sim.running else "stopped",
                          "events_sent": sim.sent})  # fmt: skip


@router.post("/start-ingestion")
async def start_ingestion(request: Request) -> Response:
    """Start the simulated fleet; starting it again while it runs changes nothing."""
    _, sim = _demo(request)
    started = sim.start()
    return json_response({"message": "Data ingestion started",
                          "status": "started" if started else "already_running",
                          "rate": sim.config.rate})  # fmt: skip


@router.post("/stop-ingestion")
async def stop_ingestion(request: Request) -> Response:
    """Stop the simulated fleet; stopping it again changes nothing."""
    _, sim = _demo(request)
    stopped = await sim.stop()
    return json_response({"message": "Data ingestion stopped",
                          "status": "stopped" if stopped else "already_stopped",
                          "events_sent": sim.sent})  # fmt: skip


@router.get("/raw-data")
async def raw_data(request: Request, limit: int = 100, category: str | None = None) -> Response:
    """A list of the latest raw readings, newest first (``?category=``, ``?limit=`` up to 10000)."""
    where, limit = _where(category), _check_limit(limit)
    p, _ = _demo(request)
    st = p.streams.get(DEFAULT_TENANT, "readings")
    await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic), timeout_s=2.0)
    rows = await asyncio.to_thread(
        p.store.sql, DEFAULT_TENANT,
        f"SELECT ts AS timestamp, value, category, device_id, temperature, status, event_id "
        f"FROM readings {where} ORDER BY ts DESC LIMIT {limit}",
        max_rows=limit, timeout_s=10,
    )  # fmt: skip
    return json_response(rows.to_pylist())


@router.get("/processed-data")
async def processed_data(
    request: Request, limit: int = 100, category: str | None = None
) -> Response:
    """A list, per category: average value, count and the latest event time."""
    where, limit = _where(category), _check_limit(limit)
    p, _ = _demo(request)
    try:
        rows = await asyncio.to_thread(
            p.store.sql, DEFAULT_TENANT,
            f"SELECT category, avg_value, count, last_timestamp FROM category_stats {where} "
            f"ORDER BY category LIMIT {limit}",
            max_rows=limit, timeout_s=10,
        )  # fmt: skip
        data: list[dict[str, Any]] = rows.to_pylist()
    except NotFound:
        data = []  # the pipeline has not written its table yet
    return json_response(data)


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
