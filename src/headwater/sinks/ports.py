"""What a sink runner needs of a delivery kind (HTTP, NATS, Parquet files...)."""

from __future__ import annotations

from typing import Protocol

from headwater.sinks.http import Outcome, Slots, Stats
from headwater.sinks.policy import Breaker


class Options(Protocol):
    """The batching options every kind's config has."""

    @property
    def batch_rows(self) -> int: ...
    @property
    def batch_bytes(self) -> int: ...
    @property
    def batch_age_ms(self) -> int: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def max_pending_rows(self) -> int: ...
    @property
    def start(self) -> str: ...


class Delivery(Protocol):
    """Delivers one request body (its rows as JSON) under its idempotency key."""

    stats: Stats
    breaker: Breaker
    slots: Slots

    @property
    def config(self) -> Options: ...

    async def send(self, body: bytes, key: str) -> Outcome:
        """Returns once the body is delivered, or must go to the dead-letter table."""
        ...

    async def close(self) -> None: ...
