"""Live subscriptions: committed rows of a table pushed to listeners (SSE).

Writers publish from any thread after their commit; each subscriber has a bounded
queue. A subscriber that falls behind gets a ``resync`` event instead of unbounded
memory growth, and should re-read the table.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass

import orjson
import pyarrow as pa

from headwater.api.render import JSON_OPTS, _default

QUEUE_EVENTS = 256


@dataclass
class _Sub:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes]


class Subscriptions:
    def __init__(self) -> None:
        self._subs: dict[tuple[str, str], list[_Sub]] = defaultdict(list)
        self._lock = threading.Lock()

    def subscribe(self, tenant: str, table: str) -> _Sub:
        sub = _Sub(asyncio.get_running_loop(), asyncio.Queue(QUEUE_EVENTS))
        with self._lock:
            self._subs[(tenant, table)].append(sub)
        return sub

    def unsubscribe(self, tenant: str, table: str, sub: _Sub) -> None:
        with self._lock:
            subs = self._subs.get((tenant, table), [])
            if sub in subs:
                subs.remove(sub)

    def has_subscribers(self, tenant: str, table: str) -> bool:
        return bool(self._subs.get((tenant, table)))

    def publish(self, tenant: str, table: str, rows: pa.Table, kind: str = "rows") -> None:
        """Send rows to every subscriber of the table (serialized once)."""
        with self._lock:
            subs = list(self._subs.get((tenant, table), []))
        if not subs or rows.num_rows == 0:
            return
        payload = orjson.dumps(
            {"kind": kind, "rows": rows.to_pylist()}, option=JSON_OPTS, default=_default
        )
        for sub in subs:
            sub.loop.call_soon_threadsafe(_offer, sub.queue, payload)


def _offer(queue: asyncio.Queue[bytes], payload: bytes) -> None:
    if queue.full():
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(b'{"kind": "resync", "rows": []}')
        return
    queue.put_nowait(payload)
