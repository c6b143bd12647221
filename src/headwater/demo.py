"""The demo profile's classic endpoints, over the runtime's demo fleet (``runtime.demo``:
the simulated IoT fleet, a ``readings`` stream and sample pipelines).

It serves the classic demo endpoints (``/api/v1/health``, ``/api/v1/start-ingestion``,
``/api/v1/stop-ingestion``, ``/api/v1/raw-data``, ``/api/v1/processed-data``), which
need no key: the demo is for a local machine.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from headwater.api.render import json_response
from headwater.connectors.sources.simulator import CATEGORIES
from headwater.errors import BadRequest, NotFound
from headwater.runtime import DEFAULT_TENANT, Runtime
from headwater.runtime.demo import DemoFleet

router = APIRouter(prefix="/api/v1", tags=["demo"])

MAX_LIMIT = 10_000


def _demo(request: Request) -> tuple[Runtime, DemoFleet]:
    rt: Runtime = request.app.state.runtime
    assert rt.demo is not None  # ``install`` mounts these routes only then
    return rt, rt.demo


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
    started = sim.resume()
    return json_response({"message": "Data ingestion started",
                          "status": "started" if started else "already_running",
                          "rate": sim.config.rate})  # fmt: skip


@router.post("/stop-ingestion")
async def stop_ingestion(request: Request) -> Response:
    """Stop the simulated fleet; stopping it again changes nothing."""
    _, sim = _demo(request)
    stopped = sim.pause()
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


def install(app: FastAPI, runtime: Runtime) -> None:
    """Mount the classic demo endpoints (the runtime's demo fleet runs the simulator)."""
    if runtime.demo is None:
        raise RuntimeError("the demo profile needs a runtime built with demo=True")
    app.include_router(router)
