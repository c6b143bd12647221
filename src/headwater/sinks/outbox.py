"""Where a sink runner's rows go: encoded and cut into requests, then delivered.

The runner keeps the cursor, the chunks and the commits; an ``Outbox`` does the rest of
the work per row: rows to JSON, requests of ``batch_rows`` under their idempotency keys,
and their delivery (retries, rate limit, breaker). The runner holds only a ``Ticket`` per
request, so the outbox may live in this process (``LocalOutbox``) or in a sink worker
process (``sinks/workers.py``) without the runner knowing.

    outbox = LocalOutboxes().open("partner", True, http_config({"url": "http://..."}))
    tickets = await outbox.requests(entries, None)
    outcome, dead_rows = await outbox.deliver(tickets[0])
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from headwater.log.ports import LogEntry
from headwater.sinks.config import HttpConfig, KafkaSinkConfig
from headwater.sinks.http import HttpDelivery, Outcome, Stats
from headwater.sinks.nats import NatsDelivery, NatsSinkConfig
from headwater.sinks.policy import Breaker
from headwater.sinks.ports import Delivery, Figures, Options, Window
from headwater.sinks.rows import Encoder, Request, Row, requests_of


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a runner knows of a request: not its body, only its key and rows."""

    id: int
    key: str
    first: int  # the log offset of its first row
    last: int  # ... and of its last
    rows: int
    epoch: int = 0  # the sink worker generation that holds its body (0: this process)


class Outbox(Figures, Protocol):
    """What a ``SinkRunner`` needs to deliver rows, and the figures its status shows."""

    async def requests(self, entries: list[LogEntry], keep: pa.Array | None) -> list[Ticket]:
        """The entries' rows (less those ``keep`` leaves out) as requests, in order."""
        ...

    async def deliver(self, ticket: Ticket) -> tuple[Outcome, list[Row]]:
        """Deliver a request: its outcome and the rows that went dead (for the DLQ)."""
        ...

    async def send(self, body: bytes, key: str) -> Outcome:
        """One body again (a dead letter's replay): delivered, or dead."""
        ...

    async def close(self) -> None: ...


class LocalOutbox:
    """An ``Outbox`` in this process, over one ``Delivery``."""

    def __init__(self, sink: str, by_offset: bool, delivery: Delivery) -> None:
        self.sink, self.by_offset, self.delivery = sink, by_offset, delivery
        self._encoder: Encoder | None = None  # made at the first rows (a file sink has none)
        self._held: dict[int, Request] = {}
        self._ids = itertools.count(1)

    @property
    def config(self) -> Options:
        return self.delivery.config

    @property
    def stats(self) -> Stats:
        return self.delivery.stats

    @property
    def breaker(self) -> Breaker:
        return self.delivery.breaker

    @property
    def slots(self) -> Window:
        return self.delivery.slots

    async def requests(self, entries: list[LogEntry], keep: pa.Array | None) -> list[Ticket]:
        reqs = await asyncio.to_thread(self._cut, entries, keep)
        return self.hold(reqs)

    def _cut(self, entries: list[LogEntry], keep: pa.Array | None) -> list[Request]:
        if self._encoder is None:
            self._encoder = Encoder()
        rows = self._encoder.rows(self.sink, entries, self.by_offset, keep)
        cfg = self.config
        return requests_of(self.sink, rows, cfg.batch_rows, cfg.batch_bytes, self.by_offset)

    def hold(self, reqs: list[Request]) -> list[Ticket]:
        tickets = []
        for req in reqs:
            t = Ticket(next(self._ids), req.key, req.rows[0].offset, req.rows[-1].offset,
                       len(req.rows))  # fmt: skip
            self._held[t.id] = req
            tickets.append(t)
        return tickets

    async def deliver(self, ticket: Ticket) -> tuple[Outcome, list[Row]]:
        req = self._held.pop(ticket.id)
        out = await self.delivery.deliver(req)
        return out, [req.rows[i] for i in out.dead_rows] if out.ok else list(req.rows)

    async def send(self, body: bytes, key: str) -> Outcome:
        return await self.delivery.send(body, key)

    async def close(self) -> None:
        self._held.clear()
        try:
            await self.delivery.close()
        finally:
            if self._encoder is not None:
                self._encoder.close()


class Outboxes(Protocol):
    """Opens a sink's outbox: here, or in a sink worker process."""

    def open(self, sink: str, by_offset: bool, config: Options) -> Outbox: ...

    async def close(self) -> None:
        """After every outbox it opened is closed."""
        ...


class LocalOutboxes:
    """Outboxes in this process; sinks to one destination share its circuit breaker."""

    def __init__(self) -> None:
        self._breakers: dict[str, Breaker] = {}

    def open(self, sink: str, by_offset: bool, config: Options) -> LocalOutbox:
        breaker = self._breakers.setdefault(destination(config), breaker_of(config))
        return LocalOutbox(sink, by_offset, delivery_of(config, breaker))

    async def close(self) -> None:
        return None


def delivery_of(config: Options, breaker: Breaker) -> Delivery:
    if isinstance(config, NatsSinkConfig):
        return NatsDelivery(config, breaker)
    if isinstance(config, KafkaSinkConfig):
        from headwater.sinks.kafka import KafkaDelivery

        return KafkaDelivery(config, breaker)
    assert isinstance(config, HttpConfig), config
    return HttpDelivery(config, breaker)


def destination(config: Options) -> str:
    """What one circuit breaker guards: ``scheme://host:port``, a Kafka cluster, or a
    file directory."""
    from urllib.parse import urlsplit

    if isinstance(config, HttpConfig | NatsSinkConfig):
        return "{0.scheme}://{0.netloc}".format(urlsplit(config.url))
    if isinstance(config, KafkaSinkConfig):
        return f"kafka://{config.bootstrap}"
    return f"file://{getattr(config, 'path', '')}"


def breaker_of(config: Options) -> Breaker:
    if isinstance(config, HttpConfig | NatsSinkConfig | KafkaSinkConfig):
        return Breaker(config.breaker_failures, config.breaker_open_s)
    return Breaker()
