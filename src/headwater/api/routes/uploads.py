"""``POST /v1/streams/{name}/files``: a raw body or multipart/form-data, streamed to disk."""

from __future__ import annotations

import asyncio
import os
from typing import IO, Any

from fastapi import APIRouter, Request
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import runtime
from headwater.connectors.sources.uploads import Uploads, upload_format
from headwater.errors import BadRequest, PayloadTooLarge

router = APIRouter(prefix="/v1", tags=["sources"])


def uploads(request: Request) -> Uploads:
    return runtime(request).uploads


@router.post("/streams/{name}/files")
async def upload_file(name: str, request: Request) -> Response:
    """Import a file: CSV, NDJSON, JSON, Avro or Parquet, raw (its Content-Type, optionally
    ``Content-Encoding: gzip``) or as the file part of multipart/form-data.

    Answers ``{"job", "state", "accepted", "rejected", "duplicates", "chunks"}`` once the
    import is durable; ``GET /v1/streams/{name}/files/{job}`` shows its progress meanwhile.
    A file that cannot be read is ``400 import_failed`` (the job's counts in ``details``).
    """
    who = authenticate(request)
    who.require("admin", "writer")
    p, u = runtime(request), uploads(request)
    p.streams.get(who.tenant, name)  # 404 before reading anything
    ctype = request.headers.get("content-type", "")
    encoding = request.headers.get("content-encoding")
    multipart = ctype.lower().startswith("multipart/form-data")
    fmt = None if multipart else upload_format(ctype, encoding)
    job, path = u.new(who.tenant, name, fmt or "")
    limit = p.settings.upload_max_bytes
    with open(path, "wb") as fh:
        if multipart:
            fmt = await _spool_multipart(request, ctype, fh, limit)
        else:
            await _spool(request, fh, limit)
        await asyncio.to_thread(_fsync, fh)
    job.fmt = fmt or ""
    u.received(job)
    await u.run(job)
    if job.state != "done":
        raise BadRequest(
            f"the file could not be imported: {job.stats.last_error}; rows committed before "
            "the problem stay stored (see details); fix the file and send the rest",
            code="import_failed", **job.view(),
        )  # fmt: skip
    return json_response(job.view())


@router.get("/streams/{name}/files/{job}")
async def upload_progress(name: str, job: str, request: Request) -> Response:
    who = authenticate(request)
    return json_response(uploads(request).get(who.tenant, job).view())


async def _spool(request: Request, fh: IO[bytes], limit: int) -> None:
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"the file is over {limit} bytes (upload_max_bytes)")
        fh.write(part)


async def _spool_multipart(request: Request, ctype: str, fh: IO[bytes], limit: int) -> str:
    """Write the first part with a file name to ``fh``; return its import format."""
    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("multipart/form-data needs a boundary", code="malformed_multipart")
    state: dict[str, Any] = {"headers": {}, "field": b"", "value": b"", "file": None, "n": 0}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode().lower()] = state["value"].decode()
        state["field"] = state["value"] = b""

    def on_headers_finished() -> None:
        _, disp = parse_options_header(state["headers"].get("content-disposition", ""))
        filename = disp.get(b"filename", b"").decode()
        if state["file"] is None and filename:
            state["file"] = upload_format(state["headers"].get("content-type"), None, filename)
            state["writing"] = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.get("writing"):
            state["n"] += end - start
            if state["n"] > limit:
                raise PayloadTooLarge(f"the file is over {limit} bytes (upload_max_bytes)")
            fh.write(data[start:end])

    def on_part_end() -> None:
        state["writing"] = False
        state["headers"] = {}

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data, "on_part_end": on_part_end,
    })  # fmt: skip
    try:
        async for part in request.stream():
            parser.write(part)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"the multipart body is malformed: {exc}",
                         code="malformed_multipart") from exc  # fmt: skip
    if state["file"] is None:
        raise BadRequest("the form has no file part (a part with a filename)",
                         code="missing_file")  # fmt: skip
    fmt: str = state["file"]
    return fmt


def _fsync(fh: IO[bytes]) -> None:
    fh.flush()
    os.fsync(fh.fileno())
