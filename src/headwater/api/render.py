"""Turning Arrow tables into HTTP answers (JSON, NDJSON, Arrow IPC, Parquet)."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from starlette.responses import Response

from headwater.errors import BadRequest
from headwater.model.time import parse_iso_ms
from headwater.query.json_values import JSON_OPTS as JSON_OPTS
from headwater.query.json_values import dumps_json as dumps_json
from headwater.query.json_values import json_default


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps_json(content), status, headers, "application/json")


def table_response(table: pa.Table, next_cursor: str | None, fmt: str) -> Response:
    """Rows in the asked format; JSON carries ``next_cursor``, the others a header."""
    headers = {"X-Next-Cursor": next_cursor} if next_cursor else {}
    if fmt == "json":
        return json_response({"rows": rows_of(table), "next_cursor": next_cursor})
    if fmt == "ndjson":
        body = b"".join(
            orjson.dumps(r, option=JSON_OPTS, default=json_default) + b"\n" for r in rows_of(table)
        )
        return Response(body, 200, headers, "application/x-ndjson")
    if fmt == "arrow":
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        return Response(sink.getvalue(), 200, headers, "application/vnd.apache.arrow.stream")
    if fmt == "parquet":
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return Response(sink.getvalue(), 200, headers, "application/vnd.apache.parquet")
    raise BadRequest(
        f"unknown format {fmt!r}; use json, ndjson, arrow or parquet", code="bad_format"
    )


def parse_time_bound(value: str | None, name: str) -> int | None:
    """ISO-8601 with an offset, or epoch milliseconds."""
    if value is None or value == "":
        return None
    v = value.strip()
    if v.lstrip("-").isdigit():
        return int(v)
    try:
        return parse_iso_ms(v.replace(" ", "+") if "T" in v and " " in v else v)
    except ValueError as exc:
        raise BadRequest(
            f"{name}={value!r} is not a time: use ISO-8601 with an offset (2026-01-01T00:00:00Z) or epoch ms",
            code="bad_time",
        ) from exc
