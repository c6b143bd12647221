"""Event ingestion: ``POST /v1/streams/{name}/events``, the hottest route, on plain ASGI.

The framework's per-request work (dependency resolution, request objects, its
middleware stack) costs more than ingesting a small request does, so ``IngestEdge``
answers this one route itself, in front of the application, with the same checks,
answers and errors. The FastAPI route below declares it for the OpenAPI document and
serves it when the edge is not installed; both call ``ingest_request``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from fastapi import APIRouter, Request
from prometheus_client import Counter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.api.auth import KeyCache, principal_of
from headwater.api.errors import headwater_error, unexpected_error
from headwater.api.routes.streams import read_limited
from headwater.errors import HeadwaterError
from headwater.ingest.service import IngestOutcome
from headwater.observability import metrics as m
from headwater.runtime import Runtime

router = APIRouter(prefix="/v1/streams", tags=["streams"])

EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]
                }
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/csv": {"schema": {"type": "string"}},
            "avro/binary": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
        },
    ],
}


@router.post("/{name}/events", openapi_extra=EVENTS_BODY)
async def ingest_events(name: str, request: Request) -> Response:
    """Ingest events: JSON object or array, NDJSON, CSV (header row) or Avro OCF; gzip allowed.

    The answer comes once every accepted row is durable: ``{"accepted", "rejected",
    "duplicates", "errors": [{"row", "field", "code", "message"}]}``.
    """
    state = request.app.state
    request_id = getattr(request.state, "request_id", "")
    outcome = await ingest_request(
        state.runtime, state.keys, name, request.headers, request.stream(), request_id
    )
    return Response(outcome.body, outcome.status, _headers(outcome), "application/json")


async def ingest_request(
    p: Runtime,
    keys: KeyCache,
    name: str,
    headers: Mapping[str, str],
    chunks: AsyncIterator[bytes],
    request_id: str,
) -> IngestOutcome:
    """Authenticate, read the body within the limits, ingest it; errors are raised."""
    who = principal_of(headers.get("authorization"), keys)
    who.require("admin", "writer")
    st = p.streams.get(who.tenant, name)
    limit = p.settings.max_body_bytes
    declared = headers.get("content-length")
    try:
        # Bytes are held as they arrive: a declared length that never comes holds nothing.
        with p.inflight.claim(who.tenant, who.key_id) as claim:
            body = await read_limited(declared, chunks, limit, claim.take)
            outcome = await p.ingest.ingest(
                st,
                body,
                headers.get("content-type", "application/json"),
                headers.get("content-encoding"),
                headers.get("idempotency-key"),
                who.key_id,
                request_id,
            )
    except HeadwaterError as exc:
        _requests_counter(who.tenant, name, exc.status).inc()
        raise
    _requests_counter(who.tenant, name, outcome.status).inc()
    return outcome


def _headers(outcome: IngestOutcome) -> dict[str, str] | None:
    return {"Idempotent-Replayed": "true"} if outcome.replayed else None


# ``labels()`` takes a lock and checks its arguments: bind each child once. The keys are
# existing streams (an unknown one is refused before counting) and a few statuses.
_REQUEST_COUNTERS: dict[tuple[str, str, int], Counter] = {}


def _requests_counter(tenant: str, stream: str, status: int) -> Counter:
    key = (tenant, stream, status)
    counter = _REQUEST_COUNTERS.get(key)
    if counter is None:
        counter = _REQUEST_COUNTERS[key] = m.INGEST_REQUESTS.labels(tenant, stream, str(status))
    return counter


EVENTS_PATH = re.compile(r"/v1/streams/([^/]+)/events")
# Headers the route reads; others are not decoded.
WANTED = frozenset(
    (b"authorization", b"content-length", b"content-type", b"content-encoding", b"idempotency-key")
)


@dataclass(frozen=True, slots=True)
class _Route:
    """What the request middleware reads of a matched route: its template, for metrics."""

    path: str = "/v1/streams/{name}/events"


ROUTE = _Route()


class IngestEdge:
    """Answers ``POST /v1/streams/{name}/events`` before the application sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            match = EVENTS_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["route"] = ROUTE
                await self._ingest(match.group(1), scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _ingest(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state
        headers = {
            k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in WANTED
        }
        request_id = scope.get("state", {}).get("request_id", "")
        extra: dict[str, str] | None
        try:
            outcome = await ingest_request(
                state.runtime, state.keys, name, headers, _chunks(receive), request_id
            )
            status, body, extra = outcome.status, outcome.body, _headers(outcome)
        except HeadwaterError as exc:
            status, body, extra = headwater_error(exc)
        except _Disconnected:
            return  # nobody to answer
        except Exception as exc:
            status, body = unexpected_error(exc, scope["path"])
            extra = None
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        for k, v in (extra or {}).items():
            raw.append((k.lower().encode("latin-1"), v.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})


class _Disconnected(Exception):
    """The client went away before its body arrived."""


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return
