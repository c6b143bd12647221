"""Tables (pipeline output, reference data) and read-only SQL."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import dumps_json, json_response, table_response
from headwater.api.routes.streams import json_body, row_query, runtime
from headwater.errors import BadRequest, HeadwaterError, NotFound
from headwater.observability.metrics import QUERY_LIMITED
from headwater.query.columns import visible
from headwater.query.guarded import encode_answer
from headwater.query.limits import LIMIT_CODES, QueryBudget, QueryLimits
from headwater.store.ports import is_truncated

router = APIRouter(prefix="/v1", tags=["query"])


@router.get("/tables")
async def list_tables(request: Request) -> Response:
    who = authenticate(request)
    p = runtime(request)
    return json_response({"tables": sorted(p.tables.readable(who.tenant))})


@router.get("/tables/{name}/rows")
async def table_rows(name: str, request: Request) -> Response:
    """Rows of a table by time range (window_start for windowed results), filters, cursor."""
    who = authenticate(request)
    who.require("admin", "reader")
    p = runtime(request)
    if name not in p.tables.readable(who.tenant):
        raise NotFound(f"table {name!r} does not exist", code="unknown_table")
    schema = p.store.table_schema(who.tenant, name)
    if schema is None:
        raise NotFound(f"table {name!r} has no rows yet", code="unknown_table")
    time_col = p.pipelines.time_column(who.tenant, name)
    if time_col is None:
        st = next((s for s in p.streams.in_tenant(who.tenant) if s.schema.name == name), None)
        time_col = (st.schema.event_time if st else None) or (
            "window_start" if "window_start" in schema.names else None
        )
    q, fmt = row_query(
        request, who.tenant, name, time_col, [n for n in schema.names if n != "_id_hash"]
    )
    page = await asyncio.to_thread(p.store.read_rows, q)
    return table_response(page.rows, page.next_cursor, fmt)


SQL_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {
            "type": "object", "required": ["sql"],
            "properties": {"sql": {"type": "string"}, "max_rows": {"type": "integer", "minimum": 1}},
        }}},
    }
}  # fmt: skip


@router.post("/query", openapi_extra=SQL_BODY)
async def run_query(request: Request) -> Response:
    """Read-only SQL over this tenant's streams and tables: ``{"sql": "SELECT ..."}``.

    The query runs in the query pool (a per-tenant share, 429 ``too_many_queries``
    beyond it) under the query caps of ``headwater.query.limits``: parsing, running and
    encoding the answer all count against one deadline.
    """
    who = authenticate(request)
    who.require("admin", "reader")
    p = runtime(request)
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("sql"), str):
        raise BadRequest("send {'sql': 'SELECT ...'}", code="invalid_request")
    for st in p.streams.in_tenant(who.tenant):
        await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic), timeout_s=2.0)
    requested = data.get("max_rows", p.settings.query_max_rows)
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise BadRequest("max_rows must be a positive integer", code="invalid_request")
    max_rows = min(requested, p.settings.query_max_rows)
    limits = QueryLimits.from_settings(p.settings)

    def answer() -> bytes:
        budget = QueryBudget.start(limits)
        table = p.store.sql(
            who.tenant, data["sql"], max_rows=max_rows, timeout_s=limits.timeout_s, budget=budget
        )
        truncated = is_truncated(table)
        # Internal columns (_offset, _received_ms, ...) only when the query names them.
        table, internal = visible(table, data["sql"])
        return encode_answer(table, truncated, budget, dumps_json, {"hidden_columns": internal})

    try:
        body = await p.queries.run(who.tenant, answer)
    except HeadwaterError as exc:
        if exc.code in LIMIT_CODES:
            QUERY_LIMITED.labels(exc.code).inc()
        raise
    return Response(body, media_type="application/json")
