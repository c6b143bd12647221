"""Data subjects: erase everything stored about one (GDPR right to erasure)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import runtime
from headwater.erasure import erase_subject

router = APIRouter(prefix="/v1/streams", tags=["streams"])


@router.delete("/{name}/subjects/{value:path}")
async def erase(name: str, value: str, request: Request) -> Response:
    """Erase a data subject: their rows in the stream, its quarantine and the outputs of
    the pipelines reading it, with a tombstone so that no replay or backfill brings them
    back. The stream must declare its ``subject`` field. Answers what was erased where."""
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    st = p.streams.get(who.tenant, name)
    return json_response(await erase_subject(p, p.pipelines, st, value))
