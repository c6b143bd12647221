"""Reading and waiting, as every embedded ``Log`` adapter does them.

``entry_range`` says which entries a read returns, ``sliced`` cuts an entry straddling
the read's offset, and ``EndWaiters`` wakes readers when a topic grows. ``FileLog`` and
``MemoryLog`` both use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence

from headwater.log.ports import LogEntry


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
