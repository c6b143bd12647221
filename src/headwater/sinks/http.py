"""HTTP delivery of one request body: retries, ``Retry-After``, AIMD, rate limit, breaker.

``HttpDelivery.send`` returns only when the body was accepted (2xx, or 409 when so
configured) or must go to the dead-letter table (another 4xx, or retries exhausted).
Waiting never holds a concurrency slot: a request backing off leaves room for others.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from aiolimiter import AsyncLimiter
from standardwebhooks import Webhook
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from headwater.sinks.config import HttpConfig
from headwater.sinks.policy import BACK_OFF, Aimd, Breaker, classify, retry_after_s
from headwater.sinks.rows import Request

BODY_KEPT = 1000  # characters of a failed answer kept in the dead-letter table


class Retryable(Exception):
    def __init__(self, status: int | None, body: str, error: str, retry_after: float | None):
        super().__init__(error)
        self.status, self.body, self.error, self.retry_after = status, body, error, retry_after


@dataclass
class Outcome:
    """How a request ended: delivered, or dead with the last answer."""

    ok: bool
    attempts: int
    status: int | None = None
    body: str = ""
    error: str = ""
    first_failure_ms: int | None = None
    last_failure_ms: int | None = None
    dead_rows: list[int] = field(default_factory=list)  # of a delivered request, dead alone


@dataclass
class Stats:
    """Counts of attempts since start (the status and the metrics read them)."""

    attempts: int = 0
    failed: int = 0
    rate_limited: int = 0
    latency_s: float = 0.0
    waiting: int = 0  # requests backing off right now
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        return self.failed / self.attempts if self.attempts else 0.0

    @property
    def avg_latency_ms(self) -> float:
        return 1000 * self.latency_s / self.attempts if self.attempts else 0.0


class Slots:
    """A semaphore whose size follows an ``Aimd`` limit."""

    def __init__(self, aimd: Aimd) -> None:
        self.aimd = aimd
        self.used = 0
        self._cond = asyncio.Condition()

    @property
    def limit(self) -> int:
        return self.aimd.limit

    async def acquire(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.used < self.aimd.limit)
            self.used += 1

    async def release(self) -> None:
        async with self._cond:
            self.used -= 1
            self._cond.notify_all()


class HttpDelivery:
    def __init__(self, config: HttpConfig, breaker: Breaker) -> None:
        self.config = config
        self.breaker = breaker
        self.stats = Stats()
        self.slots = Slots(Aimd(config.max_concurrency))
        rate = config.rate_limit_per_s
        self._rate = AsyncLimiter(1, 1 / rate) if rate else None
        self._signer = Webhook(config.secret) if config.secret else None
        self._not_before = 0.0  # a Retry-After seen on 429/503 holds every request
        limits = httpx.Limits(max_connections=config.max_concurrency * 2)
        self._client = httpx.AsyncClient(timeout=config.timeout_s, limits=limits)
        self._jitter = wait_random_exponential(
            multiplier=config.backoff_base_s, max=config.backoff_max_s
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def deliver(self, req: Request) -> Outcome:
        return await self.send(req.body, req.key)

    async def send(self, body: bytes, key: str) -> Outcome:
        """Deliver ``body`` with ``Idempotency-Key: key`` (the same on every attempt)."""
        cfg = self.config
        out = Outcome(ok=False, attempts=0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.max_attempts) | stop_after_delay(cfg.max_retry_s),
            wait=self._wait,
            retry=retry_if_exception_type(Retryable),
            before_sleep=self._sleeping,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    out.attempts += 1
                    if attempt.retry_state.attempt_number > 1:
                        self.stats.waiting -= 1
                    await self._attempt(body, key, out)
        except Retryable as exc:
            out.status, out.body, out.error = exc.status, exc.body, exc.error
        return out

    def _wait(self, state: RetryCallState) -> float:
        """Full-jitter capped exponential backoff, never shorter than ``Retry-After``."""
        wait = float(self._jitter(state))
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.config.max_retry_s))
        return wait

    def _sleeping(self, state: RetryCallState) -> None:
        self.stats.waiting += 1

    async def _attempt(self, body: bytes, key: str, out: Outcome) -> None:
        await self.slots.acquire()
        try:  # admission is checked holding the slot: a 429 seen meanwhile holds this one too
            await self._admitted()
            if self._rate is not None:
                await self._rate.acquire()
            self._answer(await self._post(body, key, out), out)
        finally:
            await self.slots.release()

    async def _admitted(self) -> None:
        """Wait for the breaker to let a request through and any Retry-After to pass."""
        while True:
            now = time.monotonic()
            if now < self._not_before:
                await asyncio.sleep(self._not_before - now)
                continue
            if self.breaker.admit(now):
                return
            await asyncio.sleep(self.breaker.wait_s(now))

    async def _post(self, body: bytes, key: str, out: Outcome) -> httpx.Response:
        headers = {**self.config.headers, "content-type": "application/json",
                   "idempotency-key": key}  # fmt: skip
        if self._signer is not None:
            now = datetime.now(UTC)
            headers["webhook-id"] = key
            headers["webhook-timestamp"] = str(int(now.timestamp()))
            headers["webhook-signature"] = self._signer.sign(key, now, body.decode())
        t0 = time.monotonic()
        self.stats.attempts += 1
        try:
            return await self._client.post(self.config.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            self._failed(out)
            if isinstance(exc, httpx.TimeoutException):
                self.slots.aimd.on_push_back()
            self.breaker.on_failure(time.monotonic())
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise Retryable(None, "", error, None) from exc
        finally:
            self.stats.latency_s += time.monotonic() - t0

    def _answer(self, resp: httpx.Response, out: Outcome) -> None:
        status = resp.status_code
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        verdict = classify(status, self.config.success_on_409)
        if verdict == "ok":
            self.breaker.on_success()
            self.slots.aimd.on_success()
            out.ok = True
            return
        self._failed(out)
        text = resp.text[:BODY_KEPT]
        if verdict == "dead":
            self.breaker.on_success()  # the destination answers; the rows are the problem
            out.status, out.body, out.error = status, text, f"HTTP {status}"
            return
        wait = retry_after_s(resp.headers.get("retry-after"), time.time())
        if status in BACK_OFF:
            self.slots.aimd.on_push_back()
            if wait is not None:
                self._not_before = max(self._not_before, time.monotonic() + wait)
        if status == 429:  # a rate limit: the destination is up
            self.stats.rate_limited += 1
            self.breaker.on_success()
        else:
            self.breaker.on_failure(time.monotonic())
        raise Retryable(status, text, f"HTTP {status}", wait)

    def _failed(self, out: Outcome) -> None:
        self.stats.failed += 1
        now = int(time.time() * 1000)
        if out.first_failure_ms is None:
            out.first_failure_ms = now
        out.last_failure_ms = now
