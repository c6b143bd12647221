"""Sinks: deliver a stream's rows or a pipeline's results to an outside system."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import json_body, platform
from headwater.pipelines.manager import erased_rows
from headwater.services import Platform
from headwater.sinks.manager import SinkManager

router = APIRouter(prefix="/v1", tags=["sinks"])

SINK_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["name", "kind", "from", "config"],
            "properties": {
                "name": {"type": "string"}, "kind": {"type": "string", "enum": ["http", "webhook"]},
                "from": {"type": "string"}, "config": {"type": "object"},
            },
        }}},
    }
}  # fmt: skip


def sinks(request: Request) -> SinkManager:
    s: SinkManager = request.app.state.sinks
    return s


@router.post("/sinks", status_code=201, openapi_extra=SINK_BODY)
async def create_sink(request: Request) -> Response:
    """Attach a sink to a table or stream: ``{"name", "kind", "from", "config"}``."""
    who = authenticate(request)
    who.require("admin")
    data = await json_body(request)
    p = platform(request)
    p.quotas.check_count(who.tenant, "sinks", len(p.catalog.sinks(who.tenant)))
    return json_response(await asyncio.to_thread(sinks(request).create, who.tenant, data), 201)


@router.get("/sinks")
async def list_sinks(request: Request) -> Response:
    who = authenticate(request)
    return json_response({"sinks": await asyncio.to_thread(sinks(request).list, who.tenant)})


@router.get("/sinks/{name}")
async def get_sink(name: str, request: Request) -> Response:
    """Status, ``produced = delivered + dead_lettered + pending``, breaker, lag, rates."""
    who = authenticate(request)
    return json_response(await asyncio.to_thread(sinks(request).status, who.tenant, name))


@router.post("/sinks/{name}/pause")
async def pause_sink(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    return json_response(await asyncio.to_thread(sinks(request).pause, who.tenant, name))


@router.post("/sinks/{name}/resume")
async def resume_sink(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    return json_response(await asyncio.to_thread(sinks(request).resume, who.tenant, name))


@router.delete("/sinks/{name}")
async def drop_sink(name: str, request: Request) -> Response:
    """Drop a sink; ``?drop_tables=true`` also drops its dead-letter table."""
    who = authenticate(request)
    who.require("admin")
    drop_tables = request.query_params.get("drop_tables", "false").lower() == "true"
    await asyncio.to_thread(sinks(request).drop, who.tenant, name, drop_tables)
    return json_response({"name": name, "dropped": True, "tables_dropped": drop_tables})


@router.post("/sinks/{name}/dlq/replay")
async def replay_dead_letters(name: str, request: Request) -> Response:
    """Deliver dead letters again, each at most once: ``{"offsets": [...]}`` or ``{"all": true}``."""
    who = authenticate(request)
    who.require("admin")
    data = await json_body(request)
    out = await asyncio.to_thread(sinks(request).replay, who.tenant, name, data)
    return json_response(out)


def install(app: FastAPI, platform_: Platform) -> None:
    """Run sinks in this server (after the pipelines extension, whose output they follow)."""
    pipelines = platform_.extras["pipelines"]
    mgr = SinkManager(
        platform_.catalog, platform_.log, platform_.store, platform_.streams, platform_.clock,
        pipelines.followed,  # type: ignore[attr-defined]
        platform_.table_names,
        lambda tenant, stream: partial(
            erased_rows, platform_.tombstones, platform_.streams.get(tenant, stream)
        ),
        platform_.settings.sink_files_root,
    )  # fmt: skip
    app.state.sinks = mgr
    platform_.extras["sinks"] = mgr
    app.include_router(router)

    async def start() -> None:
        await asyncio.to_thread(mgr.start_all)

    async def stop() -> None:
        await asyncio.to_thread(mgr.stop_all)

    app.state.on_start.append(start)
    app.state.on_stop.append(stop)
