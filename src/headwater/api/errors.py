"""Every error answer is JSON: ``{"error": {"code": ..., "message": ...}}``."""

from __future__ import annotations

import math

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from headwater.api.render import JSON_OPTS, json_response
from headwater.errors import HeadwaterError, Overloaded, RateLimited

log = structlog.get_logger("headwater.api")

HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
    422: "invalid_request", 429: "rate_limited", 503: "overloaded",
}  # fmt: skip


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: object
) -> Response:
    body: dict[str, object] = {"code": code, "message": message, **extra}
    return json_response({"error": body}, status, headers)


def headwater_error(exc: HeadwaterError) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers (``Retry-After`` on pushback) of an error answer."""
    headers = {}
    if isinstance(exc, RateLimited | Overloaded):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    if exc.status >= 500 and not isinstance(exc, Overloaded):
        log.error("request_failed", code=exc.code, error=exc.message)
    return exc.status, orjson.dumps({"error": exc.to_dict()}, option=JSON_OPTS), headers


def unexpected_error(exc: Exception, path: str) -> tuple[int, bytes]:
    log.error("unhandled_error", path=path, exc_info=exc)
    message = f"unexpected {type(exc).__name__}; see the server log"
    return 500, orjson.dumps({"error": {"code": "internal_error", "message": message}})


def install(app: FastAPI) -> None:
    @app.exception_handler(HeadwaterError)
    async def _headwater(request: Request, exc: HeadwaterError) -> Response:
        status, body, headers = headwater_error(exc)
        return Response(body, status, headers, "application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"location": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        msg = "; ".join(f"{p['location']}: {p['message']}" for p in problems) or "invalid request"
        return error_response(400, "invalid_request", msg, problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}; see /docs"
        return error_response(exc.status_code, code, message, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        status, body = unexpected_error(exc, request.url.path)
        return Response(body, status, media_type="application/json")
