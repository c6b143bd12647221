"""Pure delivery decisions: classify an answer, read ``Retry-After``, adapt concurrency,
trip a circuit breaker. No I/O here; the clock is passed in."""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from typing import Literal

Verdict = Literal["ok", "retry", "dead"]
RETRYABLE = frozenset({408, 425, 429})
BACK_OFF = frozenset({429, 503})  # the downstream says "slower": halve the concurrency


def classify(status: int, success_on_409: bool = False) -> Verdict:
    """What an HTTP answer means for the rows it carried.

    >>> [classify(s) for s in (200, 204, 409, 429, 500, 400)]
    ['ok', 'ok', 'dead', 'retry', 'retry', 'dead']
    >>> classify(409, success_on_409=True)
    'ok'
    """
    if 200 <= status < 300 or (status == 409 and success_on_409):
        return "ok"
    if status in RETRYABLE or status >= 500:
        return "retry"
    return "dead"


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    >>> retry_after_s("3", 0.0)
    3.0
    >>> retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 4.0)
    6.0
    >>> retry_after_s("soon", 0.0) is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_s)


class Aimd:
    """Additive-increase / multiplicative-decrease concurrency, as TCP congestion control.

    Slow start doubles the limit per window of successes until it reaches the threshold;
    then each full window of successes adds one. A push-back (429, 503, timeout) halves it.

    >>> a = Aimd(maximum=16)
    >>> for _ in range(3): a.on_success()
    >>> a.limit
    4
    >>> a.on_push_back(); a.limit
    2
    """

    def __init__(self, maximum: int, start: int = 1) -> None:
        self.maximum = max(1, maximum)
        self.limit = min(self.maximum, max(1, start))
        self.threshold = self.maximum
        self._credit = 0

    def on_success(self) -> None:
        if self.limit < self.threshold:  # slow start: +1 per success = x2 per window
            self.limit = min(self.maximum, self.limit + 1)
            return
        self._credit += 1
        if self._credit >= self.limit:
            self._credit = 0
            self.limit = min(self.maximum, self.limit + 1)

    def on_push_back(self) -> None:
        self.threshold = max(1, self.limit // 2)
        self.limit = self.threshold
        self._credit = 0


BreakerState = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    """One circuit breaker per destination: ``failures`` in a row open it for ``open_s``;
    then one probe goes through (half-open): success closes it, failure opens it again.

    >>> b = Breaker(failures=2, open_s=5.0)
    >>> b.on_failure(0.0); b.on_failure(1.0); b.state(1.0)
    'open'
    >>> b.admit(6.0), b.admit(6.0)  # one probe only
    (True, False)
    >>> b.on_success(); b.state(6.5)
    'closed'
    """

    failures: int = 5
    open_s: float = 5.0
    _row: int = 0
    _opened_at: float | None = None
    _probe_at: float | None = None  # when the half-open probe went (None: none out)

    def state(self, now_s: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if now_s - self._opened_at < self.open_s:
            return "open"
        return "half_open"

    def admit(self, now_s: float) -> bool:
        """Whether a request may go now (claims the probe when half-open).

        A probe with no verdict after ``open_s`` (cancelled, or answered in a way that
        says nothing of the destination's health) no longer blocks another one.
        """
        st = self.state(now_s)
        if st == "closed":
            return True
        if st == "half_open" and (self._probe_at is None or now_s - self._probe_at >= self.open_s):
            self._probe_at = now_s
            return True
        return False

    def wait_s(self, now_s: float) -> float:
        """How long until ``admit`` may say yes (a small poll while a probe is out)."""
        if self._opened_at is None:
            return 0.0
        return max(0.05, self.open_s - (now_s - self._opened_at))

    def on_success(self) -> None:
        self._row, self._opened_at, self._probe_at = 0, None, None

    def on_failure(self, now_s: float) -> None:
        self._row += 1
        if self._probe_at is not None or self._row >= self.failures:
            self._opened_at, self._probe_at = now_s, None
