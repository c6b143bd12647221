"""The audit trail: every administrative request an authenticated key makes.

Recorded after the answer, refused ones included (a 403 is worth knowing about): who
(tenant, key id, role), what (method and route, the path as called, the status), when
and from where (client address, request id). Data traffic is not administration and is
left out: ingest, queries, reference-table rows, file uploads and webhooks. Unauthenticated
requests leave nothing, so they cannot fill the trail.
"""

from __future__ import annotations

import asyncio
import re

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.api.auth import Principal
from headwater.catalog.sqlite import AuditEntry, Catalog
from headwater.model.time import Clock

log = structlog.get_logger("headwater.audit")

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DATA_ROUTES = re.compile(
    r"^/v1/(query|streams/[^/]+/(events|files)|tables/[^/]+/rows|webhooks/[^/]+)/?$"
)


class AuditTrail:
    def __init__(self, app: ASGIApp, catalog: Catalog, clock: Clock) -> None:
        self.app = app
        self.catalog = catalog
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in MUTATING
            or DATA_ROUTES.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            who = scope.get("state", {}).get("principal")
            if isinstance(who, Principal):
                await self._record(scope, who, status)

    async def _record(self, scope: Scope, who: Principal, status: int) -> None:
        route = getattr(scope.get("route"), "path", None) or scope["path"]
        client = scope.get("client")
        entry = AuditEntry(
            self.clock.now_ms(), who.tenant, who.key_id, who.role,
            f"{scope['method']} {route}", scope["path"], status,
            f"{client[0]}:{client[1]}" if client else None,
            scope.get("state", {}).get("request_id"),
        )  # fmt: skip
        try:
            await asyncio.to_thread(self.catalog.audit, entry)
        except Exception:  # the action happened; losing its record must be loud, not fatal
            log.exception("audit_write_failed", action=entry.action, tenant=entry.tenant)
