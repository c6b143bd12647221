"""Bearer-key authentication and role checks.

Keys are looked up by digest; lookups are cached briefly, and a revocation in this
process drops the cache entry at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from fastapi import Request

from headwater.catalog.sqlite import ApiKey, Catalog, key_digest
from headwater.errors import Forbidden, Unauthorized

CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    role: str
    key_id: str

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise Forbidden(
                f"this key has role {self.role!r}; this action needs one of {', '.join(roles)}",
                code="insufficient_role",
            )


class KeyCache:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    def lookup(self, secret: str) -> ApiKey | None:
        digest = key_digest(secret)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        key = self._catalog.key_by_secret(secret)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, key)
        return key

    def forget_all(self) -> None:
        self._cache.clear()


def authenticate(request: Request) -> Principal:
    keys: KeyCache = request.app.state.keys
    who = principal_of(request.headers.get("authorization"), keys)
    request.state.principal = who  # for the audit trail
    return who


def principal_of(header: str | None, keys: KeyCache) -> Principal:
    """The principal of an ``Authorization`` header value; 401 with the reason if none."""
    if not header:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'", code="missing_key"
        )
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthorized("malformed Authorization header: use 'Bearer <key>'", code="invalid_key")
    key = keys.lookup(secret.strip())
    if key is None:
        raise Unauthorized("unknown API key", code="invalid_key")
    if key.revoked_ms is not None:
        raise Unauthorized("this API key was revoked", code="revoked_key")
    return Principal(key.tenant, key.role, key.id)


def authenticate_query_key(request: Request) -> Principal:
    """Like ``authenticate``, also taking ``?key=`` (for EventSource, which sends no headers)."""
    if "authorization" not in request.headers and request.query_params.get("key"):
        secret = request.query_params["key"]
        key = request.app.state.keys.lookup(secret)
        if key is None:
            raise Unauthorized("unknown API key", code="invalid_key")
        if key.revoked_ms is not None:
            raise Unauthorized("this API key was revoked", code="revoked_key")
        return Principal(key.tenant, key.role, key.id)
    return authenticate(request)
