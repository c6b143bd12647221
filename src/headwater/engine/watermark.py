"""Watermarks: how far event time has surely progressed. Pure values, no clock inside.

- After rows arrive, ``watermark = max(event time seen) - watermark_delay``; it never
  goes back.
- With ``idle_timeout``: once no rows have arrived for ``idle_timeout`` of processing
  time, the watermark follows processing time from where the last rows left it
  (``watermark at last rows + processing time elapsed since``), so the last windows of a
  quiet stream still close. Rows that arrive later and fall behind it are late.
- ``driven``: the watermark comes from upstream in the operator graph (``advance_to``,
  the minimum over the operator's inputs); rows observed only record their event time.
- A batch is judged against the watermark reached *before* it; the watermark then
  advances over the batch, and windows close.

>>> w = Watermark(delay_ms=5_000, idle_timeout_ms=60_000)
>>> w = w.observe(max_event_ms=100_000, now_ms=0)
>>> w.watermark_ms
95000
>>> w.on_time(now_ms=59_999).watermark_ms, w.on_time(now_ms=90_000).watermark_ms
(95000, 185000)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

NO_WATERMARK = -(2**62)
END_OF_TIME = 2**62


@dataclass(frozen=True, slots=True)
class Watermark:
    delay_ms: int = 0
    idle_timeout_ms: int | None = None
    watermark_ms: int = NO_WATERMARK
    max_event_ms: int = NO_WATERMARK
    last_input_ms: int | None = None  # processing time when rows last arrived
    anchor_ms: int = NO_WATERMARK  # the watermark right after those rows
    driven: bool = False  # set by the graph (``advance_to``), not by the rows observed

    def observe(self, max_event_ms: int | None, now_ms: int) -> Watermark:
        """Rows arrived at ``now_ms`` whose greatest event time is ``max_event_ms``."""
        if max_event_ms is None:
            return self
        top = max(self.max_event_ms, max_event_ms)
        if self.driven:
            return replace(self, max_event_ms=top, last_input_ms=now_ms)
        wm = max(self.watermark_ms, top - self.delay_ms)
        return replace(self, watermark_ms=wm, max_event_ms=top, last_input_ms=now_ms, anchor_ms=wm)

    def on_time(self, now_ms: int) -> Watermark:
        """Processing time passed without rows: advance if the input has gone idle."""
        if self.driven or self.idle_timeout_ms is None or self.last_input_ms is None:
            return self
        idle = now_ms - self.last_input_ms
        if idle < self.idle_timeout_ms or self.anchor_ms == NO_WATERMARK:
            return self
        return replace(self, watermark_ms=max(self.watermark_ms, self.anchor_ms + idle))

    def advance_to(self, watermark_ms: int) -> Watermark:
        """The upstream watermark reached ``watermark_ms`` (it never goes back)."""
        wm = max(self.watermark_ms, watermark_ms)
        return replace(self, watermark_ms=wm, anchor_ms=wm)

    def finish(self) -> Watermark:
        """End of input: every window may close."""
        return replace(self, watermark_ms=END_OF_TIME)

    @property
    def known(self) -> bool:
        return self.watermark_ms != NO_WATERMARK

    def to_dict(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark_ms,
            "max_event_ms": self.max_event_ms,
            "last_input_ms": self.last_input_ms,
            "anchor_ms": self.anchor_ms,
        }

    def with_state(self, data: dict[str, Any]) -> Watermark:
        return replace(
            self,
            watermark_ms=int(data["watermark_ms"]),
            max_event_ms=int(data["max_event_ms"]),
            last_input_ms=None if data["last_input_ms"] is None else int(data["last_input_ms"]),
            anchor_ms=int(data["anchor_ms"]),
        )
