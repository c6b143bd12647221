"""Tenants and API keys."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import json_body, platform
from headwater.catalog.sqlite import ROLES, ApiKey
from headwater.errors import BadRequest, Conflict, Forbidden
from headwater.model.schema import NAME_RE
from headwater.services import DEFAULT_TENANT

router = APIRouter(prefix="/v1", tags=["admin"])


def key_view(k: ApiKey) -> dict[str, object]:
    return {"id": k.id, "tenant": k.tenant, "role": k.role, "name": k.name,
            "created_ms": k.created_ms, "revoked": k.revoked_ms is not None}  # fmt: skip


@router.post("/keys", status_code=201)
async def create_key(request: Request) -> Response:
    """Create a key in the caller's tenant: ``{"role": "admin|writer|reader", "name": "..."}``."""
    who = authenticate(request)
    who.require("admin")
    p = platform(request)
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
    return json_response(
        {"keys": [key_view(k) for k in platform(request).catalog.keys(who.tenant)]}
    )


@router.delete("/keys/{key_id}")
async def revoke_key(key_id: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    p = platform(request)
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
    p = platform(request)
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
    p = platform(request)
    names = p.catalog.tenants() if who.tenant == DEFAULT_TENANT else [who.tenant]
    return json_response({"tenants": names})
