"""Event time is integer milliseconds UTC inside Headwater; ``datetime`` only at the edges.

The clock is passed in, never read from a global, so tests can drive time by hand.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told to.

    >>> c = ManualClock(1_000)
    >>> c.advance(500)
    >>> c.now_ms()
    1500
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> None:
        self._now += ms

    def set(self, ms: int) -> None:
        self._now = ms


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("timestamp has no time zone; add an offset such as 'Z' or '+00:00'")
    return int(dt.timestamp() * 1000)


def parse_iso_ms(text: str) -> int:
    """Parse an ISO-8601 timestamp with an offset into epoch milliseconds.

    >>> parse_iso_ms("2026-01-01T00:00:01Z")
    1767225601000
    """
    return datetime_to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


def parse_duration_ms(text: str) -> int:
    """Parse '5 seconds', '1 minute', '500ms', '2h', '30s' into milliseconds.

    >>> parse_duration_ms("1 minute"), parse_duration_ms("500ms"), parse_duration_ms("2h")
    (60000, 500, 7200000)
    """
    units = {
        "ms": 1, "millisecond": 1, "milliseconds": 1,
        "s": 1000, "sec": 1000, "second": 1000, "seconds": 1000, "secs": 1000,
        "m": 60_000, "min": 60_000, "minute": 60_000, "minutes": 60_000, "mins": 60_000,
        "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
        "d": 86_400_000, "day": 86_400_000, "days": 86_400_000,
    }  # fmt: skip
    s = text.strip().lower().strip("'")
    i = 0
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    number, unit = s[:i], s[i:].strip()
    if not number or unit not in units:
        raise ValueError(
            f"cannot read duration {text!r}; write e.g. '5 seconds', '1 minute', '500ms'"
        )
    return int(float(number) * units[unit])
