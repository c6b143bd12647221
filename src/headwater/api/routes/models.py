"""ONNX models for ``predict(...)`` in pipelines: upload, list, describe, delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import read_body, runtime
from headwater.errors import BadRequest, UnsupportedMediaType
from headwater.pipelines.models import ModelRegistry

router = APIRouter(prefix="/v1", tags=["models"])

UPLOAD_BODY = {
    "parameters": [{"name": "name", "in": "query", "required": True, "schema": {"type": "string"}}],
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
}


def registry(request: Request) -> ModelRegistry:
    return runtime(request).models


@router.post("/models", status_code=201, openapi_extra=UPLOAD_BODY)
async def upload_model(request: Request) -> Response:
    """Upload an ONNX model (the file's bytes, ``Content-Type: application/octet-stream``)
    as ``?name=``; a name already taken gets a new version."""
    who = authenticate(request)
    who.require("admin")
    name = request.query_params.get("name")
    if not name:
        raise BadRequest("name the model: POST /v1/models?name=<name>", code="invalid_request")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/octet-stream":
        raise UnsupportedMediaType(
            f"send the .onnx file's bytes with Content-Type: application/octet-stream, not {kind!r}",
            code="unsupported_media_type",
        )
    p = runtime(request)
    data = await read_body(request, p.settings.model_max_bytes)
    if not data:
        raise BadRequest("the body is empty; send the .onnx file's bytes", code="invalid_model")
    now = p.clock.now_ms()
    out = await asyncio.to_thread(registry(request).upload, who.tenant, name, data, now)
    return json_response(out, 201)


@router.get("/models")
async def list_models(request: Request) -> Response:
    who = authenticate(request)
    return json_response(await asyncio.to_thread(registry(request).all, who.tenant))


@router.get("/models/{name}")
async def get_model(name: str, request: Request) -> Response:
    who = authenticate(request)
    return json_response(await asyncio.to_thread(registry(request).describe, who.tenant, name))


@router.delete("/models/{name}", status_code=204)
async def delete_model(name: str, request: Request) -> Response:
    """Delete a model and its versions; refused (409) while a pipeline scores with it."""
    who = authenticate(request)
    who.require("admin")
    await asyncio.to_thread(registry(request).delete, who.tenant, name)
    return Response(status_code=204)
