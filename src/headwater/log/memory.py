"""``MemoryLog``: the ``Log`` port in memory, for unit tests; nothing survives the process.

This module also holds the two pieces of read/wait logic every embedded adapter shares:
``entry_range`` (which entries a read returns) and ``EndWaiters`` (waking readers when a
topic grows). ``FileLog`` imports them from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence

import pyarrow as pa

from headwater.log.ports import AppendResult, LogClosed, LogEntry, check_topic


def entry_range(starts: Sequence[int], end: int, offset: int, max_rows: int) -> range:
    """Indexes into ``starts`` (entry start offsets, ascending) a read at ``offset`` returns.

    ``end`` is one past the last row. Entries are taken whole until the next one would
    push the total past ``max_rows``; the first is always taken. An ``offset`` below the
    first entry reads from the first entry.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if not starts or offset >= end:
        return range(0)
    first = max(bisect_right(starts, offset) - 1, 0)
    rows = 0
    j = first
    while j < len(starts):
        entry_end = starts[j + 1] if j + 1 < len(starts) else end
        n = entry_end - max(offset, starts[j])
        if j > first and rows + n > max_rows:
            break
        rows += n
        j += 1
        if rows >= max_rows:
            break
    return range(first, j)


def sliced(entry: LogEntry, offset: int) -> LogEntry:
    """``entry`` without its rows below ``offset``."""
    if offset <= entry.offset:
        return entry
    batch = entry.batch.slice(offset - entry.offset)
    return LogEntry(entry.topic, offset, batch, entry.meta)


class EndWaiters:
    """Wakes async and thread waiters when a topic's end offset moves past theirs.

    Shares the owning log's lock: ``end_of`` is called with it held, and the log calls
    ``advanced`` with it held after publishing new rows.
    """

    def __init__(self, lock: threading.Lock, end_of: Callable[[str], int]) -> None:
        self._lock = lock
        self._cond = threading.Condition(lock)
        self._end_of = end_of
        self._closed = False
        # topic -> [(offset, loop, future)]; futures resolve to False when the log closes
        self._async: dict[
            str, list[tuple[int, asyncio.AbstractEventLoop, asyncio.Future[bool]]]
        ] = {}

    def advanced(self, topic: str, end: int) -> None:
        """Wake waiters of ``topic`` whose offset is now below ``end``. Lock held."""
        self._cond.notify_all()
        waiters = self._async.get(topic)
        if not waiters:
            return
        woken: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]] = {}
        keep = []
        for waiter in waiters:
            if end > waiter[0]:
                woken.setdefault(waiter[1], []).append(waiter[2])
            else:
                keep.append(waiter)
        self._async[topic] = keep
        _wake(woken, True)

    def close(self) -> None:
        """Release every waiter (they answer False). Lock held."""
        self._closed = True
        self._cond.notify_all()
        woken: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]] = {}
        for waiters in self._async.values():
            for _, loop, fut in waiters:
                woken.setdefault(loop, []).append(fut)
        self._async.clear()
        _wake(woken, False)

    async def wait(self, topic: str, offset: int, timeout_s: float) -> bool:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._end_of(topic) > offset:
                return True
            if self._closed or timeout_s <= 0:
                return False
            fut: asyncio.Future[bool] = loop.create_future()
            waiter = (offset, loop, fut)
            self._async.setdefault(topic, []).append(waiter)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._async.get(topic, [])
                if waiter in waiters:
                    waiters.remove(waiter)

    def wait_blocking(self, topic: str, offset: int, timeout_s: float) -> bool:
        return self.wait_any_blocking({topic: offset}, timeout_s)

    def wait_any_blocking(self, positions: Mapping[str, int], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while all(self._end_of(t) <= o for t, o in positions.items()):
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


def _wake(woken: dict[asyncio.AbstractEventLoop, list[asyncio.Future[bool]]], value: bool) -> None:
    # One call per loop, not per future: each call_soon_threadsafe wakes the loop.
    for loop, futures in woken.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to wake
            loop.call_soon_threadsafe(_resolve, futures, value)


def _resolve(futures: list[asyncio.Future[bool]], value: bool) -> None:
    for fut in futures:
        if not fut.done():  # a timed-out waiter's future is already cancelled
            fut.set_result(value)


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
