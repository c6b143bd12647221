"""NATS JetStream delivery (sink kind ``nats``): each request is one message, published
with ``Nats-Msg-Id`` set to the request's idempotency key, and counts as delivered once
JetStream's PubAck says it is stored. JetStream drops a message whose id it has seen
within the stream's duplicate window (2 minutes unless the stream says otherwise), so a
request sent again after a crash or a lost PubAck is stored once.

With the default ``batch_rows: 1`` a message is one row (a JSON object); more makes a
message a JSON array of rows. Failures (no connection, no PubAck in time, no stream for
the subject) are retried with capped exponential backoff and full jitter, behind the
destination's circuit breaker; a message the server refuses outright (larger than its
``max_payload``, a stream other than ``config.stream``) goes to the dead-letter table,
as do messages still failing after ``max_attempts`` or ``max_retry_s``.
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import time
from collections import deque
from typing import Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from pydantic import BaseModel, ConfigDict, Field, field_validator

from headwater.sinks.http import Outcome, Slots, Stats
from headwater.sinks.policy import Aimd, Breaker
from headwater.sinks.rows import Request

SUBJECT_RE = re.compile(r"^[^\s*>]+$")
DEAD_API_CODES = frozenset({10060, 10054})  # wrong expected stream, message too large


class NatsSinkConfig(BaseModel):
    """Options of the ``nats`` kind (see docs/sinks.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    subject: str
    stream: str | None = None  # sent as Nats-Expected-Stream: another stream refuses
    batch_rows: int = Field(1, ge=1, le=10_000)
    batch_bytes: int = Field(900_000, ge=1_000, le=64_000_000)
    batch_age_ms: int = Field(50, ge=0, le=600_000)
    max_concurrency: int = Field(64, ge=1, le=1024)
    timeout_s: float = Field(5.0, gt=0, le=300)
    max_attempts: int = Field(20, ge=1, le=1000)
    max_retry_s: float = Field(3600.0, gt=0, le=7 * 86400)
    backoff_base_s: float = Field(0.1, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    breaker_failures: int = Field(5, ge=1, le=10_000)
    breaker_open_s: float = Field(5.0, gt=0, le=3600)
    max_pending_rows: int = Field(20_000, ge=1, le=10_000_000)
    start: Literal["earliest", "latest"] = "earliest"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("nats://", "tls://")):
            raise ValueError("url must look like nats://host:4222 (or tls://)")
        return v

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        if not SUBJECT_RE.match(v) or v.startswith(".") or v.endswith(".") or ".." in v:
            raise ValueError("subject: tokens separated by '.', no spaces or wildcards")
        return v


class Gate(Slots):
    """``Slots`` with waiters served first come, first served, and woken one at a time:
    with a message per row, thousands of sends wait at once, and waking them all on
    every release (``Slots``) costs quadratic time."""

    def __init__(self, aimd: Aimd) -> None:
        super().__init__(aimd)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.used < self.aimd.limit and not self._waiters:
            self.used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot was counted for it by ``release``
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                await self.release()  # granted as it was cancelled: pass it on
            raise

    async def release(self) -> None:
        self.used -= 1
        while self._waiters and self.used < self.aimd.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.used += 1
                waiter.set_result(None)


class NatsDelivery:
    def __init__(self, config: NatsSinkConfig, breaker: Breaker) -> None:
        self.config = config
        self.breaker = breaker
        self.stats = Stats()
        self.slots: Slots = Gate(Aimd(config.max_concurrency))
        self.duplicates = 0  # PubAcks saying JetStream had the message already
        self._nc: NatsClient | None = None
        self._connecting = asyncio.Lock()

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()

    async def _client(self) -> NatsClient:
        """The connection, made again after it was lost (the failed sends are retried).
        One try per call: nats-py would try a server forever with 0 attempts allowed."""
        async with self._connecting:
            if self._nc is None or self._nc.is_closed:
                cfg = self.config
                tls = None
                if cfg.url.startswith("tls://") or cfg.ca_file:
                    tls = ssl.create_default_context(cafile=cfg.ca_file)

                async def quiet(_exc: Exception) -> None:  # failures surface in send
                    return None

                self._nc = await nats.connect(
                    cfg.url, name="headwater-sink", connect_timeout=int(max(1, cfg.timeout_s)),
                    allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0,
                    user=cfg.user, password=cfg.password, token=cfg.token, tls=tls,
                    error_cb=quiet,
                )  # fmt: skip
            return self._nc

    async def deliver(self, req: Request) -> Outcome:
        return await self.send(req.body, req.key)

    async def send(self, body: bytes, key: str) -> Outcome:
        """Publish ``body`` with ``Nats-Msg-Id: key`` (the same on every attempt)."""
        cfg = self.config
        out = Outcome(ok=False, attempts=0)
        began = time.monotonic()
        while True:
            out.attempts += 1
            verdict = await self._attempt(body, key, out)
            if verdict != "retry":
                return out
            spent = time.monotonic() - began
            if out.attempts >= cfg.max_attempts or spent >= cfg.max_retry_s:
                return out
            ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * 2**out.attempts)
            self.stats.waiting += 1
            try:
                await asyncio.sleep(random.uniform(0, min(ceiling, cfg.max_retry_s - spent)))
            finally:
                self.stats.waiting -= 1

    async def _attempt(self, body: bytes, key: str, out: Outcome) -> str:
        """``ok``, ``dead`` or ``retry``; ``out`` keeps the last error."""
        await self._admitted()
        await self.slots.acquire()
        t0 = time.monotonic()
        self.stats.attempts += 1
        try:
            nc = await self._client()
            ack = await nc.jetstream().publish(
                self.config.subject, body, timeout=self.config.timeout_s,
                stream=self.config.stream, headers={"Nats-Msg-Id": key},
            )  # fmt: skip
        except (nats.errors.MaxPayloadError, nats.errors.BadSubjectError) as exc:
            return self._failed(out, exc, dead=True)
        except nats.js.errors.APIError as exc:
            return self._failed(out, exc, dead=exc.err_code in DEAD_API_CODES)
        except Exception as exc:  # no connection, no PubAck in time, no stream (yet)
            if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError):
                self.slots.aimd.on_push_back()
            return self._failed(out, exc, dead=False)
        finally:
            self.stats.latency_s += time.monotonic() - t0
            await self.slots.release()
        if ack.duplicate:
            self.duplicates += 1
        self.breaker.on_success()
        self.slots.aimd.on_success()
        out.ok = True
        return "ok"

    async def _admitted(self) -> None:
        while True:
            now = time.monotonic()
            if self.breaker.admit(now):
                return
            await asyncio.sleep(self.breaker.wait_s(now))

    def _failed(self, out: Outcome, exc: Exception, dead: bool) -> str:
        self.stats.failed += 1
        now = int(time.time() * 1000)
        if out.first_failure_ms is None:
            out.first_failure_ms = now
        out.last_failure_ms = now
        out.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        out.body = out.error[:1000]
        if dead:
            self.breaker.on_success()  # the server answers; the message is the problem
            return "dead"
        self.breaker.on_failure(time.monotonic())
        return "retry"
