"""Pipelines, reference tables and live subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate, authenticate_query_key
from headwater.api.render import json_response
from headwater.api.routes.streams import json_body, read_limited, runtime
from headwater.api.sse import EventStream
from headwater.errors import BadRequest, NotFound
from headwater.model.names import check_free
from headwater.model.schema import arrow_schema, check_schema, schema_from_dict
from headwater.pipelines.manager import PipelineManager
from headwater.pipelines.subscriptions import SLOW, Subscriptions
from headwater.query.limits import QueryLimits, check_sql_text, without_recursion_error
from headwater.store.ports import ResultWrite

router = APIRouter(prefix="/v1", tags=["pipelines"])

HEARTBEAT_S = 15.0


def manager(request: Request) -> PipelineManager:
    return runtime(request).pipelines


PIPELINE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["sql"], "properties": {"sql": {"type": "string"}},
        }}},
    }
}  # fmt: skip


@router.post("/pipelines", status_code=201, openapi_extra=PIPELINE_BODY)
async def create_pipeline(request: Request) -> Response:
    """Create and start a pipeline: ``{"sql": "CREATE PIPELINE name AS SELECT ..."}``."""
    who = authenticate(request)
    who.require("admin")
    sql = await _sql_body(request)
    create = manager(request).create
    out = await asyncio.to_thread(without_recursion_error, lambda: create(who.tenant, sql))
    return json_response(out, 201)


@router.put("/pipelines/{name}", openapi_extra=PIPELINE_BODY)
async def replace_pipeline(name: str, request: Request) -> Response:
    """Replace a pipeline's SQL (same name). The new SQL is checked before anything
    changes. A change that leaves the state's meaning alone keeps the state, offsets and
    tables; another answers 409 naming the state it would drop, unless the SQL has
    ``WITH (reset_state = true)`` or the body ``"reset_state": true``: then state and
    tables are reset and the stream re-read."""
    who = authenticate(request)
    who.require("admin")
    data = await json_body(request)
    sql = _sql_of(data, request)
    reset = isinstance(data, dict) and data.get("reset_state") is True
    replace = manager(request).replace
    out = await asyncio.to_thread(
        without_recursion_error, lambda: replace(who.tenant, name, sql, reset)
    )
    return json_response(out)


async def _sql_body(request: Request) -> str:
    return _sql_of(await json_body(request), request)


def _sql_of(data: Any, request: Request) -> str:
    if not isinstance(data, dict) or not isinstance(data.get("sql"), str):
        raise BadRequest(
            "send {'sql': 'CREATE PIPELINE name AS SELECT ...'}", code="invalid_request"
        )
    sql: str = data["sql"]
    # Query caps: pipeline SQL gets the same text checks as ad-hoc SQL (headwater.query.limits).
    check_sql_text(sql, QueryLimits.from_settings(runtime(request).settings))
    return sql


@router.get("/pipelines")
async def list_pipelines(request: Request) -> Response:
    who = authenticate(request)
    return json_response({"pipelines": manager(request).list(who.tenant)})


@router.get("/pipelines/{name}")
async def get_pipeline(name: str, request: Request) -> Response:
    """Status (running, paused, failed with reason), watermark, lag, counters, window state."""
    who = authenticate(request)
    return json_response(manager(request).status(who.tenant, name))


@router.post("/pipelines/{name}/pause")
async def pause_pipeline(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    return json_response(await asyncio.to_thread(manager(request).pause, who.tenant, name))


@router.post("/pipelines/{name}/resume")
async def resume_pipeline(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    return json_response(manager(request).resume(who.tenant, name))


@router.delete("/pipelines/{name}")
async def drop_pipeline(name: str, request: Request) -> Response:
    """Drop a pipeline; ``?drop_tables=true`` also drops its result, late and error tables."""
    who = authenticate(request)
    who.require("admin")
    drop_tables = request.query_params.get("drop_tables", "false").lower() == "true"
    await asyncio.to_thread(manager(request).drop, who.tenant, name, drop_tables)
    return json_response({"name": name, "dropped": True, "tables_dropped": drop_tables})


@router.post("/tables", status_code=201)
async def create_reference_table(request: Request) -> Response:
    """Create a reference table for enrichment joins: ``{"name", "fields": [...], "key": [...]}``."""
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    data = await json_body(request)
    if not isinstance(data, dict):
        raise BadRequest("a table definition is a JSON object", code="invalid_schema")
    spec = schema_from_dict(
        {k: v for k, v in data.items() if k in ("name", "fields", "key", "description")}
    )
    check_schema(spec)
    if not spec.key:
        raise BadRequest(
            "a reference table needs 'key' (the columns rows are replaced by)",
            code="invalid_schema",
        )
    m = manager(request)
    check_free("reference", spec.name, p.tables.occupied(who.tenant) | m.reserved_names(who.tenant))
    p.quotas.check_count(
        who.tenant, "reference_tables", len(p.catalog.reference_tables(who.tenant))
    )
    p.store.ensure_table(who.tenant, spec.name, arrow_schema(spec), list(spec.key))
    p.catalog.put_reference_table(who.tenant, spec.name, data, p.clock.now_ms())
    m.reference_added(who.tenant, spec.name)
    return json_response({"name": spec.name, "fields": data["fields"], "key": spec.key}, 201)


@router.post("/tables/{name}/rows")
async def upsert_reference_rows(name: str, request: Request) -> Response:
    """Insert or replace rows of a reference table (JSON, NDJSON or CSV); pipelines see them next batch."""
    who = authenticate(request)
    who.require("admin", "writer")
    p = runtime(request)
    specs = p.catalog.reference_tables(who.tenant)
    if name not in specs:
        raise NotFound(f"reference table {name!r} does not exist", code="unknown_table")
    spec = schema_from_dict(
        {k: v for k, v in specs[name].items() if k in ("name", "fields", "key", "description")}
    )
    limit, headers = p.settings.max_body_bytes, request.headers
    with p.inflight.claim(who.tenant, who.key_id) as claim:
        body = await read_limited(
            headers.get("content-length"), request.stream(), limit, claim.take
        )
        batch = await p.ingest.decode(
            body, headers.get("content-type", "application/json"),
            headers.get("content-encoding"), spec, p.clock.now_ms(),
        )  # fmt: skip
    if batch.valid.num_rows:
        write = ResultWrite(
            consumer=f"reference:{name}", offsets={}, upserts={name: (batch.valid, list(spec.key))}
        )
        await asyncio.to_thread(p.store.commit, who.tenant, write)
        manager(request).reference_added(who.tenant, name)
    errors = [
        {"row": e.row, "field": e.field, "code": e.code, "message": e.message}
        for e in batch.errors[:1000]
    ]
    return json_response(
        {"accepted": batch.valid.num_rows, "rejected": len(batch.errors), "errors": errors}
    )


@router.get("/tables/{name}/subscribe")
async def subscribe(name: str, request: Request) -> Response:
    """Server-sent events: each committed change of the table as ``data: {"kind", "rows"}``.

    EventSource cannot send headers, so this route also takes the key as ``?key=``.
    """
    who = authenticate_query_key(request)
    who.require("admin", "reader")
    p = runtime(request)
    m = manager(request)
    if name not in p.tables.readable(who.tenant) and name not in m.reserved_names(who.tenant):
        raise NotFound(f"table {name!r} does not exist", code="unknown_table")
    subs: Subscriptions = m.subs
    settings = p.settings
    sub = subs.subscribe(
        who.tenant, name, p.quotas.of(who.tenant).subscribers, settings.sse_buffer_bytes
    )

    async def events() -> AsyncIterator[bytes]:
        yield b": subscribed\n\n"
        while True:
            try:
                payload = await asyncio.wait_for(sub.next(), HEARTBEAT_S)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            yield b"data: " + payload + b"\n\n"
            if payload is SLOW:
                return

    return EventStream(
        events(), settings.sse_write_timeout_s, lambda: subs.unsubscribe(who.tenant, name, sub)
    )
