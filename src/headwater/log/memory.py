"""``MemoryLog``: the ``Log`` port in memory, for unit tests; nothing survives the process.

Reads and waits work as in ``FileLog``: both take them from ``log.reading``.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping

import pyarrow as pa

from headwater.log.ports import AppendResult, LogClosed, LogEntry, check_topic
from headwater.log.reading import EndWaiters, entry_range, sliced


class _Topic:
    __slots__ = ("end", "entries", "starts")

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []
        self.starts: list[int] = []
        self.end = 0


class MemoryLog:
    """The ``Log`` port held in memory: same semantics as ``FileLog``, no durability.

    >>> import asyncio, pyarrow as pa
    >>> log = MemoryLog()
    >>> asyncio.run(log.append("default.readings", pa.record_batch({"x": [1, 2]})))
    AppendResult(topic='default.readings', offset=0, count=2)
    >>> [e.offset for e in log.read("default.readings", 1)]
    [1]
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._topics: dict[str, _Topic] = {}
        self._closed = False
        self._waiters = EndWaiters(self._lock, self._end_locked)

    async def append(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        return self.append_blocking(topic, batch, meta)

    def append_blocking(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        check_topic(topic)
        if batch.num_rows == 0:
            raise ValueError(f"cannot append an empty batch to log topic {topic!r}")
        meta = bytes(meta)
        with self._lock:
            self._check_open()
            t = self._topics.setdefault(topic, _Topic())
            offset = t.end
            t.entries.append(LogEntry(topic, offset, batch, meta))
            t.starts.append(offset)
            t.end += batch.num_rows
            self._waiters.advanced(topic, t.end)
        return AppendResult(topic, offset, batch.num_rows)

    def read(self, topic: str, offset: int, max_rows: int = 100_000) -> list[LogEntry]:
        check_topic(topic)
        with self._lock:
            self._check_open()
            t = self._topics.get(topic)
            if t is None:
                entry_range((), 0, offset, max_rows)  # validates the arguments
                return []
            picked = entry_range(t.starts, t.end, offset, max_rows)
            entries = t.entries[picked.start : picked.stop]
        return [sliced(e, offset) for e in entries]

    def read_meta(
        self, topic: str, offset: int, max_entries: int = 10_000
    ) -> list[tuple[int, int, bytes]]:
        check_topic(topic)
        with self._lock:
            self._check_open()
            t = self._topics.get(topic)
            if t is None or offset >= t.end or not t.entries:
                return []
            first = max(bisect_right(t.starts, offset) - 1, 0)
            entries = t.entries[first : first + max_entries]
        return [(e.offset, e.end, e.meta) for e in entries]

    async def wait(self, topic: str, offset: int, timeout_s: float) -> bool:
        check_topic(topic)
        return await self._waiters.wait(topic, offset, timeout_s)

    def wait_blocking(self, topic: str, offset: int, timeout_s: float) -> bool:
        check_topic(topic)
        return self._waiters.wait_blocking(topic, offset, timeout_s)

    def wait_any_blocking(self, positions: Mapping[str, int], timeout_s: float) -> bool:
        return self._waiters.wait_any_blocking(positions, timeout_s)

    def end_offset(self, topic: str) -> int:
        with self._lock:
            return self._end_locked(topic)

    def start_offset(self, topic: str) -> int:
        with self._lock:
            t = self._topics.get(topic)
            if t is None:
                return 0
            return t.starts[0] if t.starts else t.end

    def topics(self) -> list[str]:
        with self._lock:
            return sorted(self._topics)

    def rewrite_blocking(
        self, topic: str, change: Callable[[pa.RecordBatch], pa.RecordBatch | None]
    ) -> int:
        """Replace the entries ``change`` answers a batch for (see ``headwater.log.rewrite``)."""
        check_topic(topic)
        with self._lock:
            self._check_open()
            t = self._topics.get(topic)
            entries = list(t.entries) if t else []
        changed = 0
        for e in entries:
            new = change(e.batch)
            if new is None:
                continue
            if new.num_rows != e.batch.num_rows or not new.schema.equals(e.batch.schema):
                raise ValueError("a rewritten entry keeps its number of rows and its schema")
            with self._lock:  # found by offset: a trim may have dropped entries meanwhile
                j = bisect_left(t.starts, e.offset) if t is not None else 0
                if t is not None and j < len(t.starts) and t.starts[j] == e.offset:
                    t.entries[j] = LogEntry(topic, e.offset, new, e.meta)
            changed += 1
        return changed

    def trim(self, topic: str, before: int) -> None:
        with self._lock:
            t = self._topics.get(topic)
            if t is None:
                return
            # entries wholly below ``before``: those whose successor starts at or below it
            keep = bisect_right([*t.starts[1:], t.end], before)
            del t.entries[:keep], t.starts[:keep]

    def size_bytes(self) -> int:
        with self._lock:
            return sum(
                e.batch.nbytes + len(e.meta) for t in self._topics.values() for e in t.entries
            )

    async def close(self) -> None:
        with self._lock:
            self._closed = True
            self._waiters.close()

    def _end_locked(self, topic: str) -> int:
        t = self._topics.get(topic)
        return 0 if t is None else t.end

    def _check_open(self) -> None:
        if self._closed:
            raise LogClosed("the in-memory log is closed; create a new MemoryLog")
