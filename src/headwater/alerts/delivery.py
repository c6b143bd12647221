"""A notification, and how hard to try delivering it.

Notifications are delivered by the sinks' machinery (``headwater.sinks``): retries with
capped exponential backoff and full jitter, ``Retry-After``, a circuit breaker per
destination, and a dead-letter table; see ``transports`` and ``dispatch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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

    def dump(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}  # shallow: asdict deep-copies

    @staticmethod
    def load(d: dict[str, Any]) -> Notification:
        return Notification(**d)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Tries of one message, and the backoff between them (``alert_*`` settings)."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_s: float = 3600.0  # give up after this long, whatever the attempts left
    breaker_failures: int = 5
    breaker_open_s: float = 5.0
