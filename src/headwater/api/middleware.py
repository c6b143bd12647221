"""Request ids, access logs and HTTP metrics, as a plain ASGI middleware (cheap per request)."""

from __future__ import annotations

import itertools
import secrets
import time

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.observability import metrics as m
from headwater.observability import tracing

log = structlog.get_logger("headwater.http")

# Request ids: a random per-process prefix and a counter (no syscall per request).
_PREFIX = secrets.token_hex(4)
_COUNTER = itertools.count(1)


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or f"{_PREFIX}-{next(_COUNTER):x}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        t0 = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        log_ctx = structlog.contextvars.bind_contextvars(request_id=request_id)
        with tracing.http_span(scope, request_id) as sp:
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                structlog.contextvars.reset_contextvars(**log_ctx)
                elapsed = time.perf_counter() - t0
                route = scope.get("route")
                path = getattr(route, "path", None) or "unmatched"
                method = scope["method"]
                requests, seconds = _metrics(path, method, status)
                requests.inc()
                seconds.observe(elapsed)
                tracing.end_http_span(sp, method, path, status)
                if status >= 400 or elapsed > 1.0:
                    log.info("request", request_id=request_id, method=method, path=scope["path"],
                             status=status, ms=round(elapsed * 1000, 2))  # fmt: skip


# Metric children by (route, method, status): ``labels()`` takes a lock and checks its
# arguments on every call. Routes are templates, so the keys are few.
_CHILDREN: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def _metrics(path: str, method: str, status: int) -> tuple[Counter, Histogram]:
    key = (path, method, status)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = (
            m.HTTP_REQUESTS.labels(path, method, str(status)),
            m.HTTP_REQUEST_SECONDS.labels(path, method),
        )
    return found


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            value: str = v.decode("latin-1")[:64]
            return value
    return None
