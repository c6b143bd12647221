"""Small requests that arrive together share one decode, one dedup pass and one log append.

A request of one event costs the same fixed work as a request of a thousand: an Arrow
batch built, system columns attached, an entry encoded and handed to the log writer.
Under load, many such requests are parsed in the same turn of the event loop; the
``Coalescer`` gathers those of one stream (and schema version) until the loop has
run everything that was ready, then hands the group to one ``flush``. The group is
decoded as one NDJSON body, so each row is validated exactly as it would be alone,
and each request still gets its own answer, with its own row numbers.

Nothing waits on a timer: a lone request is flushed on the next turn of the loop, so
an idle server answers as fast as before, and a busy one does less work per request.

>>> import asyncio
>>> async def demo() -> list[int]:
...     seen: list[int] = []
...     async def flush(group: list[Waiting]) -> None:
...         seen.append(len(group))
...         for w in group:
...             w.future.set_result(None)
...     c = Coalescer(flush, max_rows=100, max_bytes=1 << 20)
...     await asyncio.gather(*(c.join("s", Waiting(None, [b"{}"], 2, "r")) for _ in range(3)))
...     await c.join("s", Waiting(None, [b"{}"], 2, "r"))
...     return seen
>>> asyncio.run(demo())
[3, 1]
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from headwater.ingest.model import RowError

COALESCE_BODY_BYTES = 8 * 1024  # larger bodies already amortise their fixed costs
GROUP_ROWS = 2048
GROUP_BYTES = 512 * 1024


@dataclass(slots=True)
class Waiting:
    """One request in a group: its rows (one JSON text each) and where its answer goes."""

    stream: Any  # the StreamState it was validated for
    lines: list[bytes]
    nbytes: int  # of the request body
    request_id: str
    idem_key: str | None = None
    digest: str = ""  # of the body, when it has an Idempotency-Key
    future: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class _Group:
    members: list[Waiting] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0


Flush = Callable[[list[Waiting]], Awaitable[None]]


class Coalescer:
    """Groups requests by key until the event loop has run what was ready; then flushes.

    ``flush(group)`` must settle every member's future (a result or an
    exception); if it raises instead, the members still waiting get that exception.
    """

    def __init__(
        self, flush: Flush, max_rows: int = GROUP_ROWS, max_bytes: int = GROUP_BYTES
    ) -> None:
        self._flush = flush
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._open: dict[Hashable, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def join(self, key: Hashable, w: Waiting) -> asyncio.Future[Any]:
        """Add a request to the open group of ``key``; the future gets its answer."""
        group = self._open.get(key)
        rows = len(w.lines)
        if (
            group is None
            or group.rows + rows > self._max_rows
            or group.nbytes + w.nbytes > self._max_bytes
        ):
            group = self._open[key] = _Group()
            asyncio.get_running_loop().call_soon(self._close, key, group)
        group.members.append(w)
        group.rows += rows
        group.nbytes += w.nbytes
        return w.future

    def _close(self, key: Hashable, group: _Group) -> None:
        if self._open.get(key) is group:
            del self._open[key]
        task = asyncio.get_running_loop().create_task(self._run(group.members))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _run(self, members: list[Waiting]) -> None:
        try:
            await self._flush(members)
        except BaseException as exc:
            for w in members:
                if not w.future.done():
                    w.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise


@dataclass(frozen=True, slots=True)
class Shares:
    """What each member of a group got: accepted and duplicate counts, its own row errors."""

    accepted: list[int]
    duplicates: list[int]
    errors: list[list[RowError]]

    def owners(self) -> list[int]:
        """The member of each error, in the order of the members' errors one after another."""
        return [k for k, errors in enumerate(self.errors) for _ in errors]


def split(
    counts: list[int], valid_rows: np.ndarray, keep: np.ndarray | None, errors: list[RowError]
) -> Shares:
    """Share a group's outcome among its members, with rows numbered within each member.

    ``counts`` are the members' row counts in order; ``valid_rows`` the group row of
    each valid row; ``keep`` which valid rows are not duplicates (None: all are kept).

    >>> s = split([1, 2], np.array([0, 2]), np.array([True, False]),
    ...           [RowError(1, "t", "above_max", "too hot", "{}")])
    >>> s.accepted, s.duplicates, [[e.row for e in es] for es in s.errors]
    ([1, 0], [0, 1], [[], [0]])
    """
    n = len(counts)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    member = np.searchsorted(starts, valid_rows, side="right") - 1
    kept = member if keep is None else member[keep]
    dropped = member[:0] if keep is None else member[~keep]
    per_member: list[list[RowError]] = [[] for _ in range(n)]
    bounds = starts.tolist()
    for e in errors:
        k = bisect_right(bounds, e.row) - 1
        per_member[k].append(RowError(e.row - bounds[k], e.field, e.code, e.message, e.raw))
    return Shares(
        accepted=np.bincount(kept, minlength=n).tolist(),
        duplicates=np.bincount(dropped, minlength=n).tolist(),
        errors=per_member,
    )
