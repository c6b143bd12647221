"""Admission: may these rows come in now? Pushback and rate limits, apart from ingesting.

Two questions, asked before anything is written:

- ``pushback(st)``: is the path behind the log keeping up? The store too far behind the
  log, or a stream's event-id index holding too many ids not yet on disk, answer
  ``Overloaded``.
- ``take(tenant, principal, rows, nbytes)``: do the tenant's ingest quotas and the key's
  rate limit allow these rows? If not, ``RateLimited``.

Both errors carry ``retry_after_s``. The HTTP edge turns them into 503 / 429 with
``Retry-After``; a pull source into a pause, after which it offers the same chunk again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from headwater.errors import Overloaded, RateLimited
from headwater.ingest.streams import StreamState
from headwater.observability import metrics as m


class TokenBucket:
    """Per-key rate limit in rows per second."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str, n: int, now_s: float) -> float:
        """Take n tokens; return 0 when allowed, else seconds until they would be."""
        tokens, last = self._tokens.get(key, (self.burst, now_s))
        tokens = min(self.burst, tokens + (now_s - last) * self.rate)
        # A request larger than the burst passes when the bucket is full, leaving a debt;
        # otherwise it could never pass at all.
        if n > tokens and tokens < self.burst:
            self._tokens[key] = (tokens, now_s)
            return (n - tokens) / self.rate
        self._tokens[key] = (tokens - n, now_s)
        return 0.0


class TenantRates(Protocol):
    def take_ingest(self, tenant: str, rows: int, nbytes: int, now_s: float) -> None:
        """Raise ``RateLimited`` when the tenant's ingest quotas are used up."""


class Admission:
    def __init__(
        self,
        lag_rows: Callable[[StreamState], int],
        max_lag_rows: int,
        rate_limit: TokenBucket | None = None,
        tenant_rates: TenantRates | None = None,
    ) -> None:
        self._lag, self._max_lag = lag_rows, max_lag_rows
        self._rate, self._tenant_rates = rate_limit, tenant_rates

    def pushback(self, st: StreamState, retry_after_s: float = 1.0) -> None:
        """Raise ``Overloaded`` while the path behind the log does not keep up."""
        lag = self._lag(st)
        if lag > self._max_lag:
            m.HTTP_REJECTED.labels("store_lag").inc()
            raise Overloaded(
                f"the store is {lag} rows behind the log; slow down and retry",
                retry_after_s=retry_after_s,
            )
        if st.ids.full():
            m.HTTP_REJECTED.labels("id_index").inc()
            raise Overloaded(
                f"stream {st.schema.name!r} holds {st.ids.hot_ids()} event ids in memory that "
                "are not yet on disk; slow down and retry",
                retry_after_s=retry_after_s,
            )

    def take(self, tenant: str, principal: str | None, rows: int, nbytes: int) -> None:
        """Count ``rows`` against the tenant's quotas and ``principal``'s rate limit (a
        source has no key: ``None``); raise ``RateLimited`` when either is used up."""
        if self._tenant_rates is not None:
            try:
                self._tenant_rates.take_ingest(tenant, rows, nbytes, time.monotonic())
            except RateLimited:
                m.HTTP_REJECTED.labels("tenant_quota").inc()
                raise
        if self._rate is None or principal is None:
            return
        wait_s = self._rate.take(principal, rows, time.monotonic())
        if wait_s > 0:
            m.HTTP_REJECTED.labels("rate_limit").inc()
            raise RateLimited(
                f"rate limit of {self._rate.rate:g} rows/s for this key exceeded; retry later",
                retry_after_s=wait_s,
            )
