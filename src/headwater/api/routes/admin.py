"""Tenants and API keys."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import json_body, runtime
from headwater.catalog.sqlite import ROLES, ApiKey, AuditEntry
from headwater.errors import BadRequest, Conflict, Forbidden, NotFound
from headwater.model.schema import NAME_RE
from headwater.model.time import ms_to_datetime, parse_iso_ms
from headwater.runtime import DEFAULT_TENANT

router = APIRouter(prefix="/v1", tags=["admin"])


def key_view(k: ApiKey) -> dict[str, object]:
    return {"id": k.id, "tenant": k.tenant, "role": k.role, "name": k.name,
            "created_ms": k.created_ms, "revoked": k.revoked_ms is not None}  # fmt: skip


@router.post("/keys", status_code=201)
async def create_key(request: Request) -> Response:
    """Create a key in the caller's tenant: ``{"role": "admin|writer|reader", "name": "..."}``."""
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    data = await json_body(request)
    role = data.get("role") if isinstance(data, dict) else None
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}", code="bad_role")
    secret, key = p.catalog.create_key(who.tenant, role, p.clock.now_ms(), data.get("name"))
    return json_response({**key_view(key), "key": secret}, 201)


@router.get("/keys")
async def list_keys(request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    return json_response({"keys": [key_view(k) for k in runtime(request).catalog.keys(who.tenant)]})


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    p.catalog.revoke_key(who.tenant, key_id, p.clock.now_ms())
    request.app.state.keys.forget_all()
    return json_response({"id": key_id, "revoked": True})


@router.post("/tenants", status_code=201)
async def create_tenant(request: Request) -> Response:
    """Create a tenant and its first admin key (admins of the default tenant only)."""
    who = authenticate(request)
    who.require("admin")
    if who.tenant != DEFAULT_TENANT:
        raise Forbidden(
            "only admins of the default tenant create tenants", code="insufficient_role"
        )
    p = runtime(request)
    data = await json_body(request)
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(
            "tenant name: letters, digits and '_', starting with a letter", code="bad_name"
        )
    # Case apart, two tenants would share one store file on a case-insensitive file system.
    clash = any(t.lower() == name.lower() for t in p.catalog.tenants())
    if clash or not p.catalog.ensure_tenant(name, p.clock.now_ms()):
        raise Conflict(
            f"tenant {name!r} already exists (names are compared ignoring letter case)",
            code="tenant_exists",
        )
    secret, key = p.catalog.create_key(name, "admin", p.clock.now_ms(), "bootstrap")
    return json_response({"tenant": name, "admin_key": {**key_view(key), "key": secret}}, 201)


@router.get("/tenants")
async def list_tenants(request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    p = runtime(request)
    names = p.catalog.tenants() if who.tenant == DEFAULT_TENANT else [who.tenant]
    return json_response({"tenants": names})


def _quota_view(request: Request, tenant: str) -> dict[str, object]:
    p = runtime(request)
    usage = {
        "streams": len(p.streams.in_tenant(tenant)),
        "pipelines": sum(1 for r in p.catalog.pipelines(tenant)),
        "reference_tables": len(p.catalog.reference_tables(tenant)),
        "subscribers": p.pipelines.subs.count(tenant),
        "sources": len(p.sources.in_tenant(tenant)),
        "sinks": len(p.catalog.sinks(tenant)),
    }
    return {"tenant": tenant, "quotas": p.quotas.of(tenant).to_dict(), "usage": usage}


def _quota_tenant(request: Request, tenant: str, *, change: bool) -> None:
    """Operators see and set any tenant's quotas; a tenant's admins see their own."""
    who = authenticate(request)
    who.require("admin")
    if who.tenant == DEFAULT_TENANT:
        if tenant not in runtime(request).catalog.tenants():
            raise NotFound(f"tenant {tenant!r} does not exist", code="unknown_tenant")
        return
    if change or tenant != who.tenant:
        raise Forbidden(
            "only admins of the default tenant set quotas or see other tenants' quotas",
            code="insufficient_role",
        )


@router.get("/tenants/{tenant}/quotas")
async def get_quotas(tenant: str, request: Request) -> Response:
    """The tenant's quotas in force and what it uses of them."""
    _quota_tenant(request, tenant, change=False)
    return json_response(_quota_view(request, tenant))


@router.put("/tenants/{tenant}/quotas")
async def put_quotas(tenant: str, request: Request) -> Response:
    """Set the tenant's own quotas, e.g. ``{"pipelines": 5, "ingest_rows_per_s": 10000}``;
    quotas left out take the server's defaults (0 = no limit)."""
    _quota_tenant(request, tenant, change=True)
    data = await json_body(request)
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object of quotas", code="bad_quota")
    runtime(request).quotas.set(tenant, data)
    return json_response(_quota_view(request, tenant))


@router.get("/audit")
async def audit_trail(request: Request) -> Response:
    """Administrative actions, newest first: ``?from=&to=`` (ISO-8601), ``?limit=`` (≤ 1000).

    A tenant's admins see their tenant's; operators (admins of the default tenant) see
    every tenant's, or one with ``?tenant=``.
    """
    who = authenticate(request)
    who.require("admin")
    q = request.query_params
    tenant: str | None = who.tenant
    if who.tenant == DEFAULT_TENANT:
        tenant = q.get("tenant") or None
    elif q.get("tenant") not in (None, who.tenant):
        raise Forbidden("only operators read other tenants' audit trails", code="insufficient_role")
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise BadRequest("limit must be a whole number from 1 to 1000", code="bad_limit") from None
    if not 1 <= limit <= 1000:
        raise BadRequest("limit must be a whole number from 1 to 1000", code="bad_limit")
    since = _instant_ms(q.get("from"), "from", 0)
    until = _instant_ms(q.get("to"), "to", 2**62)
    entries = await asyncio.to_thread(
        runtime(request).catalog.audit_entries, tenant, since, until, limit
    )
    return json_response({"entries": [_audit_view(e) for e in entries]})


def _instant_ms(text: str | None, name: str, default: int) -> int:
    if not text:
        return default
    try:
        return parse_iso_ms(text)
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO-8601 time with an offset, e.g. 2026-12-06T10:00:00Z",
            code="bad_time",
        ) from None


def _audit_view(e: AuditEntry) -> dict[str, object]:
    return {
        "at": ms_to_datetime(e.at_ms), "tenant": e.tenant, "key_id": e.key_id, "role": e.role,
        "action": e.action, "target": e.target, "status": e.status, "client": e.client,
        "request_id": e.request_id,
    }  # fmt: skip
