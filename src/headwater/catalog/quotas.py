"""Per-tenant quotas: how many objects a tenant may own and how fast it may ingest.

Defaults come from the settings (``quota_*``); an operator (an admin of the default
tenant) gives a tenant its own with ``PUT /v1/tenants/{name}/quotas``, kept in the
catalog. Zero means no limit. Counting quotas answer ``429 quota_exceeded``; rate quotas
answer ``429 rate_limited`` with ``Retry-After``, like the per-key rate limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Protocol

from headwater.errors import BadRequest, QuotaExceeded, RateLimited
from headwater.settings import Settings

COUNTED = ("streams", "pipelines", "reference_tables", "subscribers", "sources", "sinks")


@dataclass(frozen=True, slots=True)
class Quotas:
    streams: int = 0
    pipelines: int = 0
    reference_tables: int = 0
    subscribers: int = 0
    sources: int = 0
    sinks: int = 0
    stored_bytes: int = 0
    ingest_rows_per_s: float = 0.0
    ingest_bytes_per_s: float = 0.0

    @classmethod
    def from_settings(cls, s: Settings) -> Quotas:
        return cls(
            s.quota_streams, s.quota_pipelines, s.quota_reference_tables, s.quota_subscribers,
            s.quota_sources, s.quota_sinks, s.quota_stored_bytes, s.quota_ingest_rows_per_s, s.quota_ingest_bytes_per_s,
        )  # fmt: skip

    def with_overrides(self, overrides: dict[str, Any]) -> Quotas:
        """These quotas with ``overrides`` applied; a bad key or value is a 400."""
        known = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise BadRequest(
                    f"unknown quota {key!r}; quotas are {', '.join(known)}", code="bad_quota"
                )
            whole = known[key] == "int"
            ok = isinstance(value, int) if whole else isinstance(value, int | float)
            if not ok or isinstance(value, bool) or value < 0:
                kind = "a whole number" if whole else "a number"
                raise BadRequest(
                    f"quota {key!r} must be {kind} >= 0 (0 = no limit)", code="bad_quota"
                )
            changes[key] = value
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class QuotaStore(Protocol):
    def tenant_quotas(self, tenant: str) -> dict[str, Any]: ...
    def put_tenant_quotas(self, tenant: str, quotas: dict[str, Any]) -> None: ...


class _Bucket:
    """A token bucket refilled at ``rate`` per second, holding at most one second's worth."""

    __slots__ = ("at", "level", "rate")

    def __init__(self, rate: float, now_s: float) -> None:
        self.rate, self.level, self.at = rate, rate, now_s

    def take(self, n: float, now_s: float) -> float:
        """Take ``n``; the seconds to wait first when there is not enough (nothing taken)."""
        self.level = min(self.rate, self.level + (now_s - self.at) * self.rate)
        self.at = now_s
        if (
            n <= self.level or self.level >= self.rate
        ):  # a request over a second's worth passes alone
            self.level -= n
            return 0.0
        return (n - self.level) / self.rate


class TenantQuotas:
    """The quotas in force per tenant, their checks, and the tenants' ingest rate buckets."""

    def __init__(
        self, store: QuotaStore, defaults: Quotas, stored: Callable[[str], int] | None = None
    ) -> None:
        self._store = store
        self.defaults = defaults
        self._stored = stored  # bytes a tenant's tables take
        self._stored_at: dict[str, tuple[float, int]] = {}  # tenant -> (when read, bytes)
        self._cache: dict[str, Quotas] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def of(self, tenant: str) -> Quotas:
        q = self._cache.get(tenant)
        if q is None:
            q = self.defaults.with_overrides(self._store.tenant_quotas(tenant))
            self._cache[tenant] = q
        return q

    def set(self, tenant: str, overrides: dict[str, Any]) -> Quotas:
        """Replace the tenant's own quotas (others take the defaults again)."""
        q = self.defaults.with_overrides(overrides)
        self._store.put_tenant_quotas(tenant, overrides)
        with self._lock:
            self._cache[tenant] = q
            self._buckets = {k: b for k, b in self._buckets.items() if k[0] != tenant}
        return q

    def check_count(self, tenant: str, what: str, used: int) -> None:
        """Refuse one more ``what`` when the tenant already has ``used`` of its quota."""
        limit = int(getattr(self.of(tenant), what))
        if limit and used >= limit:
            raise QuotaExceeded(
                f"this tenant has {used} {what.replace('_', ' ')}, its quota; drop one, or ask "
                f"an operator to raise quota {what!r} (PUT /v1/tenants/{tenant}/quotas)",
                quota=what, limit=limit,
            )  # fmt: skip

    def _stored_bytes(self, tenant: str, now_s: float) -> int:
        """The tenant's stored bytes, read at most once a second (a file stat each)."""
        at, held = self._stored_at.get(tenant, (-1.0, 0))
        if now_s - at >= 1.0 and self._stored is not None:
            held = self._stored(tenant)
            self._stored_at[tenant] = (now_s, held)
        return held

    def take_ingest(self, tenant: str, rows: int, nbytes: int, now_s: float) -> None:
        """Count a request against the tenant's ingest rates; 429 with a wait when over."""
        q = self.of(tenant)
        if q.stored_bytes and self._stored is not None:
            held = self._stored_bytes(tenant, now_s)
            if held >= q.stored_bytes:
                raise QuotaExceeded(
                    f"this tenant stores {held} bytes, its quota 'stored_bytes' of "
                    f"{q.stored_bytes}; shorten its streams' retention, drop tables, or ask an "
                    "operator to raise the quota",
                    quota="stored_bytes", limit=q.stored_bytes,
                )  # fmt: skip
        for what, rate, n in (
            ("ingest_rows_per_s", q.ingest_rows_per_s, rows),
            ("ingest_bytes_per_s", q.ingest_bytes_per_s, nbytes),
        ):
            if not rate:
                continue
            with self._lock:
                bucket = self._buckets.get((tenant, what))
                if bucket is None:
                    bucket = self._buckets[(tenant, what)] = _Bucket(rate, now_s)
                wait_s = bucket.take(n, now_s)
            if wait_s > 0:
                raise RateLimited(
                    f"this tenant's quota {what!r} of {rate:g} is used up; retry later, or ask "
                    "an operator to raise it",
                    retry_after_s=wait_s, quota=what,
                )  # fmt: skip
