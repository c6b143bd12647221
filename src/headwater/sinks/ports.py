"""What a sink runner needs of a delivery kind (HTTP, NATS, Parquet files...)."""

from __future__ import annotations

from typing import Protocol

from headwater.sinks.http import Outcome, Slots, Stats
from headwater.sinks.policy import Breaker
from headwater.sinks.rows import Request


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


class Window(Protocol):
    """A delivery's concurrency: its adaptive limit and the requests in flight."""

    @property
    def limit(self) -> int: ...
    @property
    def used(self) -> int: ...


class Figures(Protocol):
    """What a sink's status and metrics read of its delivery."""

    @property
    def config(self) -> Options: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def breaker(self) -> Breaker: ...
    @property
    def slots(self) -> Window: ...


class Delivery(Figures, Protocol):
    """How a sink kind delivers requests (``HttpDelivery``, ``KafkaDelivery``,
    ``NatsDelivery``): a request's rows under its idempotency key."""

    @property
    def slots(self) -> Slots: ...

    async def deliver(self, req: Request) -> Outcome:
        """Every row delivered, or dead (all of them, or those in ``dead_rows``)."""
        ...

    async def send(self, body: bytes, key: str) -> Outcome:
        """One body again (a dead letter's replay): delivered, or dead."""
        ...

    async def close(self) -> None: ...
