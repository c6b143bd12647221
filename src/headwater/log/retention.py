"""Retention of the hot log: how far each topic may be trimmed.

A topic is trimmed only below the offset that (a) every consumer has committed past
and (b) was already the end of the topic ``retention`` ago — so nothing is deleted
that is not yet in the store and in every pipeline's state, or is younger than the
retention. The decision is a pure function; ``RetentionClock`` records, once in a
while, which offset each topic had reached at which time.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict


def trim_point(
    marks: list[tuple[int, int]], now_ms: int, retention_ms: int, consumers: list[int]
) -> int:
    """The offset below which entries may go.

    ``marks``: (time ms, end offset then), in time order. ``consumers``: the committed
    offsets of everything that reads the topic.

    >>> trim_point([(0, 100), (60_000, 500)], now_ms=90_000, retention_ms=60_000, consumers=[400])
    100
    >>> trim_point([(0, 100), (60_000, 500)], now_ms=200_000, retention_ms=60_000, consumers=[400])
    400
    >>> trim_point([(0, 100)], now_ms=200_000, retention_ms=60_000, consumers=[])
    0
    """
    if not consumers:
        return 0
    times = [t for t, _ in marks]
    i = bisect_right(times, now_ms - retention_ms)
    aged = marks[i - 1][1] if i > 0 else 0
    return min(aged, *consumers)


class RetentionClock:
    """Remembers (time, end offset) per topic, at most one mark per ``every_ms``."""

    def __init__(self, every_ms: int = 60_000, keep: int = 100_000) -> None:
        self._every = every_ms
        self._keep = keep
        self.marks: dict[str, list[tuple[int, int]]] = defaultdict(list)

    def mark(self, topic: str, now_ms: int, end: int) -> None:
        marks = self.marks[topic]
        if marks and now_ms - marks[-1][0] < self._every:
            return
        marks.append((now_ms, end))
        if len(marks) > self._keep:
            del marks[: len(marks) - self._keep]

    def forget_before(self, topic: str, offset: int) -> None:
        marks = self.marks[topic]
        while len(marks) > 1 and marks[1][1] <= offset:
            marks.pop(0)
