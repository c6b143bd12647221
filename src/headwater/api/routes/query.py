"""Tables (pipeline output, reference data) and read-only SQL."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response, table_response
from headwater.api.routes.streams import json_body, platform, row_query
from headwater.errors import BadRequest, NotFound
from headwater.query.columns import visible

router = APIRouter(prefix="/v1", tags=["query"])


@router.get("/tables")
async def list_tables(request: Request) -> Response:
    who = authenticate(request)
    p = platform(request)
    return json_response({"tables": sorted(p.table_names(who.tenant))})


@router.get("/tables/{name}/rows")
async def table_rows(name: str, request: Request) -> Response:
    """Rows of a table by time range (window_start for windowed results), filters, cursor."""
    who = authenticate(request)
    who.require("admin", "reader")
    p = platform(request)
    if name not in p.table_names(who.tenant):
        raise NotFound(f"table {name!r} does not exist", code="unknown_table")
    schema = p.store.table_schema(who.tenant, name)
    if schema is None:
        raise NotFound(f"table {name!r} has no rows yet", code="unknown_table")
    tables = p.extras.get("tables")
    time_col = tables.time_column(who.tenant, name) if tables is not None else None  # type: ignore[attr-defined]
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
    """Read-only SQL over this tenant's streams and tables: ``{"sql": "SELECT ..."}``."""
    import asyncio

    who = authenticate(request)
    who.require("admin", "reader")
    p = platform(request)
    data = await json_body(request)
    if not isinstance(data, dict) or not isinstance(data.get("sql"), str):
        raise BadRequest("send {'sql': 'SELECT ...'}", code="invalid_request")
    for st in p.streams.in_tenant(who.tenant):
        await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic), timeout_s=2.0)
    requested = data.get("max_rows", p.settings.query_max_rows)
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise BadRequest("max_rows must be a positive integer", code="invalid_request")
    max_rows = min(requested, p.settings.query_max_rows)
    table = await asyncio.to_thread(
        p.store.sql,
        who.tenant,
        data["sql"],
        max_rows=max_rows,
        timeout_s=p.settings.query_timeout_s,
    )
    truncated = bool(table.schema.metadata and table.schema.metadata.get(b"truncated") == b"true")
    # Internal columns (_offset, _received_ms, ...) only when the query names them.
    table, internal = visible(table, data["sql"])
    cols = table.column_names
    # column-wise: duplicate column names (SELECT a, * ...) must not collapse
    rows = [list(r) for r in zip(*(col.to_pylist() for col in table.columns), strict=True)]
    return json_response(
        {"columns": cols, "rows": rows, "truncated": truncated, "hidden_columns": internal}
    )
