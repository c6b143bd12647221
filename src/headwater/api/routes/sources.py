"""Sources: definitions, status, pause/resume/delete; webhook deliveries."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes import uploads
from headwater.api.routes.streams import json_body, platform, read_body
from headwater.connectors.sources.files import DirectorySource
from headwater.connectors.sources.mqtt import MqttSource
from headwater.connectors.sources.nats import NatsSource
from headwater.connectors.sources.positions import PositionFile
from headwater.connectors.sources.registry import Sources
from headwater.connectors.sources.runtime import Kinds, SourceRuntime
from headwater.connectors.sources.signatures import SignatureError, verify
from headwater.connectors.sources.uploads import Uploads
from headwater.connectors.sources.webhook import map_events
from headwater.errors import BadRequest, Overloaded
from headwater.ingest.accept import Acceptor
from headwater.services import Platform

router = APIRouter(prefix="/v1", tags=["sources"])


def sources(request: Request) -> Sources:
    s: Sources = request.app.state.sources
    return s


@router.post("/sources", status_code=201)
async def create_source(request: Request) -> Response:
    """Create a source: ``{"name", "kind", "stream", "config"}`` (see docs/sources.md)."""
    who = authenticate(request)
    who.require("admin")
    p, s = platform(request), sources(request)
    p.quotas.check_count(who.tenant, "sources", len(s.in_tenant(who.tenant)))
    names = {st.schema.name for st in p.streams.in_tenant(who.tenant)}
    rec = s.create(who.tenant, await json_body(request), names)
    return json_response(s.view(rec), 201)


@router.get("/sources")
async def list_sources(request: Request) -> Response:
    who = authenticate(request)
    s = sources(request)
    return json_response({"sources": [s.view(r) for r in s.in_tenant(who.tenant)]})


@router.get("/sources/{name}")
async def get_source(name: str, request: Request) -> Response:
    who = authenticate(request)
    s = sources(request)
    return json_response(s.view(s.get(who.tenant, name)))


@router.post("/sources/{name}/pause")
async def pause_source(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    s = sources(request)
    return json_response(s.view(s.set_status(who.tenant, name, "paused")))


@router.post("/sources/{name}/resume")
async def resume_source(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    s = sources(request)
    return json_response(s.view(s.set_status(who.tenant, name, "running")))


@router.delete("/sources/{name}")
async def delete_source(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    sources(request).drop(who.tenant, name)
    return json_response({"name": name, "deleted": True})


@router.post("/webhooks/{name}")
async def webhook(name: str, request: Request) -> Response:
    """A signed delivery for a webhook source; its signature authenticates it (no API key).

    A bad or missing signature is 401; a re-delivery (same delivery id) is answered like
    the first and stored once; a paused source answers 503 with Retry-After.
    """
    p, s = platform(request), sources(request)
    rec, cfg = s.webhook(name)
    stats = s.stats(rec)
    body = await read_body(request, p.settings.webhook_max_body_bytes)
    try:
        delivery = verify(
            cfg.verify, request.headers, body, cfg.secrets, cfg.options, p.clock.now_ms() / 1000
        )
    except SignatureError as exc:
        stats.refused += 1
        stats.last_error = f"{exc.code}: {exc.message}"
        raise
    if rec.status == "paused":
        raise Overloaded(f"source {name!r} is paused; deliver again later", retry_after_s=30)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the delivery is not JSON: {exc}", code="malformed_json") from exc
    events = map_events(payload, cfg.items, cfg.mapping)
    stats.deliveries += 1
    stats.position, stats.last_ms = delivery, p.clock.now_ms()
    if not events:
        return json_response({"accepted": 0, "rejected": 0, "duplicates": 0, "errors": []})
    st = p.streams.get(rec.tenant, rec.stream)
    outcome = await p.ingest.ingest(
        st, b"\n".join(orjson.dumps(e) for e in events), "application/x-ndjson", None,
        f"webhook:{name}:{delivery}" if delivery else None, f"source:{rec.tenant}:{name}",
        request.scope.get("state", {}).get("request_id", ""),
    )  # fmt: skip
    if not outcome.replayed and outcome.status < 300:
        answer = orjson.loads(outcome.body)
        stats.rows_in += int(answer.get("accepted", 0))
        stats.rows_rejected += int(answer.get("rejected", 0))
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
    return Response(outcome.body, outcome.status, headers, "application/json")


def install(app: FastAPI, platform_: Platform) -> None:
    """Sources: the routes, and the pull-source runtime started and stopped with the app."""
    p = platform_
    root = p.settings.file_sources_root
    registry = app.state.sources = Sources(p.catalog, p.clock, root)
    acceptor = Acceptor(
        p.ingest, p.log, p.clock, p.ingest_limits,
        lambda st: p.materializer.lag(st.topic), p.settings.store_max_lag_rows, p.quotas,
    )  # fmt: skip
    positions = PositionFile(p.settings.data_dir / "sources.sqlite")
    kinds: Kinds = {
        "mqtt": MqttSource, "file": lambda rec: DirectorySource(rec, root), "nats": NatsSource,
    }  # fmt: skip
    runtime = SourceRuntime(registry, p.streams, acceptor, positions, kinds, p.log)
    app.state.source_runtime = runtime
    files = app.state.uploads = Uploads(
        p.settings.data_dir / "uploads", runtime, p.streams, p.settings.file_chunk_bytes
    )
    app.include_router(router)
    app.include_router(uploads.router)

    async def start() -> None:
        await runtime.start()
        await files.resume()

    async def stop() -> None:
        await files.stop()
        await runtime.stop()
        positions.close()

    app.state.on_start.append(start)
    app.state.on_stop.append(stop)
