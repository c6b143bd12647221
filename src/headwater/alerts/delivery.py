"""Delivering a notification through a ``Channel``: retries with capped, jittered backoff.

A channel raises ``DeliveryError`` when a send fails; ``retryable`` failures (network
errors, 408, 425, 429, 5xx) are tried again after ``min(cap, base * 2**attempt)`` seconds
scaled by a random factor in [0, 1) (full jitter), or after the ``Retry-After`` the
service asked for (seconds or an HTTP date). After ``attempts`` tries, or at the first
failure that is not retryable, the notification is a dead letter: recorded in the
alert's history with the error.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

RETRYABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True, slots=True)
class Notification:
    """One announcement of a change of one alert (rule, key)."""

    tenant: str
    rule: str
    key: str
    kind: str  # "firing" | "resolved"
    severity: str
    summary: str
    labels: dict[str, str]
    values: dict[str, Any]  # the row that decided it
    at_ms: int
    since_ms: int  # when the condition started holding

    @property
    def dedup_key(self) -> str:
        return f"{self.rule}:{self.key}"

    @property
    def id(self) -> str:
        return f"{self.tenant}:{self.rule}:{self.key}:{self.kind}:{self.at_ms}"


class Channel(Protocol):
    """Where notifications go (Slack, PagerDuty, a webhook, e-mail)."""

    kind: str

    async def send(self, notification: Notification) -> None:
        """Deliver once; raise ``DeliveryError`` on failure."""
        ...


class DeliveryError(Exception):
    def __init__(self, message: str, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


def http_error(status: int, body: str, retry_after: str | None) -> DeliveryError:
    return DeliveryError(
        f"HTTP {status}: {body[:200]}", status in RETRYABLE_STATUS, parse_retry_after(retry_after)
    )


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.cap_s)
        return float(self.rng.random() * min(self.cap_s, self.base_s * 2**attempt))


@dataclass(frozen=True, slots=True)
class Outcome:
    attempts: int
    error: str | None  # None: delivered

    @property
    def delivered(self) -> bool:
        return self.error is None


async def deliver(
    channel: Channel,
    notification: Notification,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Outcome:
    """Send with retries; never raises for a failed delivery (the outcome says)."""
    for attempt in range(1, policy.attempts + 1):
        try:
            await channel.send(notification)
            return Outcome(attempt, None)
        except DeliveryError as exc:
            if not exc.retryable or attempt == policy.attempts:
                return Outcome(attempt, str(exc))
            await sleep(policy.delay(attempt - 1, exc.retry_after_s))
    raise AssertionError("unreachable")  # pragma: no cover


class Pacer:
    """At most one send per ``interval_s`` to each destination, in the order they asked.

    Slack accepts about one message a second per incoming webhook; pacing keeps a burst of
    alerts under that instead of collecting 429s. Runs on the event loop (no lock needed:
    nothing awaits between reading and booking a slot).
    """

    def __init__(self, interval_s: float) -> None:
        self._interval = interval_s
        self._next: dict[str, float] = {}

    async def wait(self, destination: str) -> None:
        now = time.monotonic()
        at = max(now, self._next.get(destination, 0.0))
        self._next[destination] = at + self._interval
        if at > now:
            await asyncio.sleep(at - now)
