"""Checks every request passes before any route: one ``Authorization`` header, and
browser-hardening headers on the pages a browser renders (dashboard and API docs).

Both routes of the API (the plain-ASGI ingest edge and the framework's routes) sit
behind ``EdgeGuard``, so the rules are the same everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import re

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The dashboard is static files from this server: no inline script or style, no frames.
DASHBOARD_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# The API docs page loads Swagger UI / ReDoc from their CDN and starts them with an
# inline script, allowed by its hash (computed from the page itself).
DOCS_CSP = (
    "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net {hashes}; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "font-src 'self' https://fonts.gstatic.com; connect-src 'self'; worker-src 'self' blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
COMMON = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
DOCS_PATHS = frozenset(("/docs", "/redoc", "/docs/oauth2-redirect"))
INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
DUPLICATE_AUTH = orjson.dumps(
    {
        "error": {
            "code": "duplicate_authorization",
            "message": "the request has more than one Authorization header; send exactly one",
        }
    }
)


class EdgeGuard:
    """Refuses duplicate ``Authorization`` headers (400) and hardens browser pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if sum(1 for k, _ in scope["headers"] if k == b"authorization") > 1:
            await _answer(send, 400, DUPLICATE_AUTH)
            return
        path: str = scope["path"]
        if path in DOCS_PATHS:
            await self.app(scope, receive, _DocsHeaders(send))
        elif path == "/" or path.startswith("/ui/"):
            await self.app(scope, receive, _with_headers(send, DASHBOARD_CSP.encode()))
        else:
            await self.app(scope, receive, send)


def _with_headers(send: Send, csp: bytes) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [
                *message.get("headers", []),
                *COMMON,
                (b"content-security-policy", csp),
            ]
        await send(message)

    return wrapped


class _DocsHeaders:
    """Holds back the docs page until its body is known, to allow its inline scripts by hash."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.parts: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.parts.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(self.parts)
        hashes = " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(s).digest()).decode() + "'"
            for s in INLINE_SCRIPT.findall(body)
        )
        csp = DOCS_CSP.format(hashes=hashes).encode()
        headers = [*self.start.get("headers", []), *COMMON, (b"content-security-policy", csp)]
        await self.send({**self.start, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
