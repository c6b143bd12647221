"""Streams: definitions and schema versions, event ingestion, raw reads, quarantine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import Principal, authenticate
from headwater.api.render import json_response, parse_time_bound, table_response
from headwater.errors import BadRequest, PayloadTooLarge
from headwater.ingest.quarantine import STATES
from headwater.ingest.replay import Selection
from headwater.ingest.streams import StreamState, quarantine_table_of
from headwater.model.schema import schema_from_dict, schema_to_dict
from headwater.runtime import Runtime
from headwater.store.ports import Order, RowQuery

router = APIRouter(prefix="/v1/streams", tags=["streams"])

RESERVED_PARAMS = {"from", "to", "limit", "cursor", "order", "format", "n", "key"}


def runtime(request: Request) -> Runtime:
    """The runtime whose services the routes render (built and started outside the app)."""
    rt: Runtime = request.app.state.runtime
    return rt


async def json_body(request: Request, limit: int = 1 << 20) -> Any:
    body = await read_body(request, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="malformed_json") from exc


async def read_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing more than ``limit`` bytes without reading it all."""
    return await read_limited(request.headers.get("content-length"), request.stream(), limit)


async def read_limited(
    declared: str | None,
    chunks: AsyncIterator[bytes],
    limit: int,
    on_chunk: Callable[[int], None] | None = None,
) -> bytes:
    """Join body chunks, refusing more than ``limit`` bytes (the declared length first).

    ``on_chunk`` is told each chunk's size as it arrives (to hold it against a budget).
    """
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(
            f"body of {declared} bytes is over the {limit}-byte limit; split it", limit=limit
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit}-byte limit; split it", limit=limit)
        if on_chunk is not None:
            on_chunk(len(chunk))
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def describe(st: StreamState, p: Runtime) -> dict[str, Any]:
    out = schema_to_dict(st.schema)
    out["versions"] = len(st.versions)
    out["log_end_offset"] = p.log.end_offset(st.topic)
    out["stored_offset"] = p.materializer.committed(st.topic)
    out["quarantined"] = p.log.end_offset(st.quarantine_topic)
    return out


FIELD_SCHEMA = {
    "type": "object",
    "required": ["name", "type"],
    "properties": {
        "name": {"type": "string"},
        "type": {"type": "string", "enum": ["string", "int", "float", "bool", "timestamp", "json"]},
        "required": {"type": "boolean"},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "enum": {"type": "array", "items": {"type": "string"}},
        "regex": {"type": "string"},
        "max_length": {"type": "integer"},
        "unit": {"type": "string", "enum": ["iso", "s", "ms", "us"]},
        "description": {"type": "string"},
    },
}
STREAM_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["name", "fields"],
                    "properties": {
                        "name": {"type": "string"},
                        "fields": {"type": "array", "items": FIELD_SCHEMA},
                        "event_time": {"type": "string"},
                        "key": {"type": "array", "items": {"type": "string"}},
                        "id": {"type": "string"},
                        "rules": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["expr"],
                                "properties": {
                                    "expr": {"type": "string"},
                                    "code": {"type": "string"},
                                    "message": {"type": "string"},
                                },
                            },
                        },
                        "allow_missing_event_time": {"type": "boolean"},
                        "dedup_horizon": {"type": "string"},
                        "retention": {"type": "string"},
                        "description": {"type": "string"},
                    },
                }
            }
        },
    }
}


async def _definition(request: Request) -> dict[str, Any]:
    """A stream definition from the body; its version is the server's to give."""
    data = await json_body(request)
    if not isinstance(data, dict):
        raise BadRequest("a stream definition is a JSON object", code="invalid_schema")
    data.pop("version", None)
    return data


@router.post("", status_code=201, openapi_extra=STREAM_BODY)
async def create_stream(request: Request) -> Response:
    """Create a stream with a schema (fields, constraints, event time, key, id)."""
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    schema = schema_from_dict(await _definition(request))
    p.quotas.check_count(who.tenant, "streams", len(p.streams.in_tenant(who.tenant)))
    st = p.streams.create(who.tenant, schema, p.clock.now_ms(), taken=p.tables.occupied(who.tenant))
    return json_response(describe(st, p), 201)


@router.get("")
async def list_streams(request: Request) -> Response:
    who = authenticate(request)
    p = runtime(request)
    return json_response({"streams": [describe(st, p) for st in p.streams.in_tenant(who.tenant)]})


@router.get("/{name}")
async def get_stream(name: str, request: Request) -> Response:
    who = authenticate(request)
    p = runtime(request)
    return json_response(describe(p.streams.get(who.tenant, name), p))


@router.put("/{name}", openapi_extra=STREAM_BODY)
async def evolve_stream(name: str, request: Request) -> Response:
    """Change a stream's schema: compatible changes apply live, others get 409 with reasons."""
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    data = {**await _definition(request), "name": name}
    st, changes = p.streams.evolve(who.tenant, schema_from_dict(data), p.clock.now_ms())
    return json_response({**describe(st, p), "changes": changes})


@router.get("/{name}/versions")
async def stream_versions(name: str, request: Request) -> Response:
    who = authenticate(request)
    st = runtime(request).streams.get(who.tenant, name)
    return json_response({"versions": [schema_to_dict(v) for v in st.versions]})


def row_query(
    request: Request, tenant: str, table: str, time_column: str | None, columns: list[str]
) -> tuple[RowQuery, str]:
    qp = request.query_params
    limit_s = qp.get("limit", "100")
    if not limit_s.isdigit() or not 1 <= int(limit_s) <= 100_000:
        raise BadRequest("limit must be an integer from 1 to 100000", code="bad_limit")
    asked = qp.get("order", "asc")
    if asked not in ("asc", "desc"):
        raise BadRequest("order must be asc or desc", code="bad_order")
    order: Order = "desc" if asked == "desc" else "asc"
    filters = {k: v for k, v in qp.items() if k not in RESERVED_PARAMS}
    unknown = [k for k in filters if k not in columns]
    if unknown:
        raise BadRequest(
            f"unknown filter column(s) {', '.join(unknown)}; filter by one of {', '.join(columns)}",
            code="unknown_column",
        )
    q = RowQuery(
        tenant=tenant, table=table, time_column=time_column,
        from_ms=parse_time_bound(qp.get("from"), "from"), to_ms=parse_time_bound(qp.get("to"), "to"),
        filters=filters, order=order, limit=int(limit_s), cursor=qp.get("cursor") or None,
    )  # fmt: skip
    return q, qp.get("format", "json")


def typed_filters(q: RowQuery, st: StreamState) -> RowQuery:
    """Query-string filter values are text; give them the field's type."""
    from dataclasses import replace

    types = {f.name: f.type for f in st.schema.fields}
    out: dict[str, Any] = {}
    for k, v in q.filters.items():
        t = types.get(k)
        try:
            out[k] = (
                int(v)
                if t == "int"
                else float(v)
                if t == "float"
                else (v.lower() == "true")
                if t == "bool"
                else v
            )
        except ValueError as exc:
            raise BadRequest(f"filter {k}={v!r} is not a valid {t}", code="bad_filter") from exc
    return replace(q, filters=out)


async def _readable_stream(request: Request, name: str) -> tuple[Principal, Runtime, StreamState]:
    """A reader's stream, once the store holds every row acknowledged before this request."""
    who = authenticate(request)
    who.require("admin", "reader")
    p = runtime(request)
    st = p.streams.get(who.tenant, name)
    await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic))
    return who, p, st


@router.get("/{name}/events")
async def read_events(name: str, request: Request) -> Response:
    """Stored rows by event-time range (``from`` inclusive, ``to`` exclusive), filters, cursor."""
    who, p, st = await _readable_stream(request, name)
    q, fmt = row_query(
        request,
        who.tenant,
        name,
        st.schema.event_time or "_received_ms",
        [*st.schema.field_names, "_offset"],
    )
    page = await asyncio.to_thread(p.store.read_rows, typed_filters(q, st))
    return table_response(page.rows, page.next_cursor, fmt)


@router.get("/{name}/events/count")
async def count_events(name: str, request: Request) -> Response:
    who, p, st = await _readable_stream(request, name)
    q, _ = row_query(
        request, who.tenant, name, st.schema.event_time or "_received_ms", st.schema.field_names
    )
    # A filtered count scans the stream: off the event loop, like every other read.
    count = await asyncio.to_thread(p.store.count_rows, typed_filters(q, st))
    return json_response({"count": count})


@router.get("/{name}/latest")
async def latest_events(name: str, request: Request) -> Response:
    """The latest ``n`` rows of each key (by event time); ``?field=value`` filters first."""
    who, p, st = await _readable_stream(request, name)
    if not st.schema.key:
        raise BadRequest("this stream has no key fields; define 'key' to use latest", code="no_key")
    n_s = request.query_params.get("n", "1")
    if not n_s.isdigit() or not 1 <= int(n_s) <= 1000:
        raise BadRequest("n must be an integer from 1 to 1000", code="bad_limit")
    q, fmt = row_query(request, who.tenant, name, None, st.schema.field_names)
    rows = await asyncio.to_thread(
        p.store.latest_per_key,
        who.tenant,
        name,
        st.schema.key,
        st.schema.event_time or "_received_ms",
        int(n_s),
        typed_filters(q, st).filters,
    )
    return table_response(rows, None, fmt)


@router.get("/{name}/quarantine")
async def list_quarantine(name: str, request: Request) -> Response:
    """Rejected rows with reason code, field, message, raw text, schema version, receive time,
    and replay state (``?state=quarantined|replayed|duplicate`` filters by it)."""
    who = authenticate(request)
    who.require("admin", "reader")
    p = runtime(request)
    st = p.streams.get(who.tenant, name)
    # Rows and their states: replays change them through these three topics.
    for topic in (st.quarantine_topic, st.quarantine_updates_topic, st.topic):
        await p.materializer.caught_up(topic, p.log.end_offset(topic))
    cols = ["row", "field", "code", "format", "schema_version", "request_id", "_offset", "state"]
    state = request.query_params.get("state")
    if state is not None and state not in STATES:
        raise BadRequest(f"state must be one of {', '.join(STATES)}", code="bad_state")
    q, fmt = row_query(request, who.tenant, quarantine_table_of(name), "received_ms", cols)
    page = await asyncio.to_thread(p.store.read_rows, q)
    return table_response(page.rows, page.next_cursor, fmt)


@router.post("/{name}/quarantine/replay")
async def replay_quarantine(name: str, request: Request) -> Response:
    """Re-ingest quarantined rows (after fixing the schema): ``{"offsets": [..]}`` or ``{"code": ..}``.

    Only rows in state ``quarantined`` are taken, so each row is replayed at most once:
    a row that passes becomes ``replayed`` (with the offset it was stored at), one that
    fails again stays ``quarantined`` with its new reason, updated in place.
    """
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    st = p.streams.get(who.tenant, name)
    selection = Selection.parse(await json_body(request))
    return json_response(await p.replay.replay(st, selection))
