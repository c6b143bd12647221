"""The in-flight budget: request bytes held in memory at once, shared fairly.

Bytes are taken as they are read, never from a declared ``Content-Length``, so a
client that announces a large body and sends nothing holds nothing. Each tenant, and
each key, may hold at most a share of the budget, so one of them cannot take it all:
the others' requests still pass; a key's share is half its tenant's, so one key cannot
lock out its tenant's other keys. A request is never refused for a cap while it is the
only one its owner has in flight (else a body larger than a share could never pass);
the body limit bounds it.

>>> budget = InflightBudget(1000, share=0.5)
>>> with budget.claim("a") as a, budget.claim("a") as b:
...     a.take(400)
...     b.take(100)
...     b.take(100)
Traceback (most recent call last):
headwater.errors.Overloaded: tenant 'a' holds 500 request bytes in flight (its share is 500 of 1000); retry shortly
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from headwater.errors import Overloaded
from headwater.observability import metrics as m


class InflightBudget:
    """Bounds the request bytes being read, decoded and written at once."""

    def __init__(self, max_bytes: int, share: float = 1.0) -> None:
        self.max_bytes = max_bytes
        self.share_bytes = max(1, int(max_bytes * share))
        self.key_share_bytes = max(1, self.share_bytes // 2)
        self.bytes = 0
        self.by_owner: dict[tuple[str, str], int] = {}

    def claim(self, tenant: str | None = None, key: str | None = None) -> Claim:
        """A request's claim on the budget (a context manager: its bytes come back on exit)."""
        return Claim(self, tenant, key)

    @contextmanager
    def hold(self, n: int) -> Iterator[None]:
        """Hold ``n`` bytes for a request with no owner (``claim`` for a tenant's)."""
        with self.claim() as c:
            c.take(n)
            yield


class Claim:
    """The bytes one request holds; grows as its body is read."""

    __slots__ = ("budget", "bytes", "owners")

    def __init__(self, budget: InflightBudget, tenant: str | None, key: str | None) -> None:
        self.budget = budget
        self.bytes = 0
        owners = []
        if tenant is not None:
            owners.append((("tenant", tenant), budget.share_bytes))
        if key is not None:
            owners.append((("key", key), budget.key_share_bytes))
        self.owners = owners

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def take(self, n: int) -> None:
        """Hold ``n`` more bytes, or raise Overloaded (503) when over the budget or a share."""
        b = self.budget
        if b.bytes + n > b.max_bytes and b.bytes > self.bytes:
            _refuse(
                "inflight_bytes",
                f"{b.bytes} request bytes are in flight (limit {b.max_bytes}); retry shortly",
            )
        held_by = b.by_owner
        for owner, cap in self.owners:
            held = held_by.get(owner, 0)
            if held + n > cap and held > self.bytes:
                _refuse(
                    "inflight_share",
                    f"{owner[0]} {owner[1]!r} holds {held} request bytes in flight (its share "
                    f"is {cap} of {b.max_bytes}); retry shortly",
                )
        b.bytes += n
        for owner, _ in self.owners:
            held_by[owner] = held_by.get(owner, 0) + n
        self.bytes += n

    def release(self) -> None:
        if not self.bytes:
            return
        b = self.budget
        b.bytes -= self.bytes
        for owner, _ in self.owners:
            left = b.by_owner[owner] - self.bytes
            if left > 0:
                b.by_owner[owner] = left
            else:
                del b.by_owner[owner]
        self.bytes = 0


def _refuse(reason: str, message: str) -> None:
    m.HTTP_REJECTED.labels(reason).inc()
    raise Overloaded(message, retry_after_s=1.0)
