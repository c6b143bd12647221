"""Live subscriptions: committed rows of a table pushed to listeners (SSE).

Writers publish from any thread after their commit; ``publish`` only queues the rows
(Arrow tables are immutable, nothing is copied), and one publisher thread encodes each
table once (``JsonRows``, GIL released) and hands the payload to every subscriber's
event loop. So a pipeline's commit cycle never waits on its readers.

Each subscriber has a buffer bounded in bytes: a subscriber that falls further behind
gets a final ``closed`` event saying why and is disconnected (it should reconnect and
re-read the table). All subscribers of a table whose rows pile up faster than the
publisher encodes them get a ``resync`` event and should re-read the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict, deque
from dataclasses import dataclass

import orjson
import pyarrow as pa
import structlog

from headwater.errors import QuotaExceeded
from headwater.pipelines.json_rows import JsonRows

log = structlog.get_logger("headwater.subscriptions")

BUFFER_BYTES = 8 * 1024 * 1024  # default of ``sse_buffer_bytes``
PENDING_TABLES = 64  # tables queued for encoding before the oldest give way to a resync
RESYNC = b'{"kind": "resync", "rows": []}'
SLOW = (
    b'{"kind": "closed", "reason": "slow_subscriber", "message": "this subscriber fell more '
    b"than its buffer behind the table and is disconnected; reconnect and re-read the rows "
    b'since the last one you have", "rows": []}'
)


@dataclass
class _Sub:
    """One subscriber's buffer: events wait in ``queue``, ``waiting`` bytes of them."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes]
    tenant: str
    limit_bytes: int = BUFFER_BYTES
    waiting: int = 0
    closed: bool = False  # the final event is queued: nothing more goes in

    async def next(self) -> bytes:
        payload = await self.queue.get()
        self.waiting -= len(payload)
        return payload


@dataclass(frozen=True, slots=True)
class _Pending:
    tenant: str
    table: str
    rows: pa.Table | None  # None: tell the subscribers to resync
    kind: str = "rows"


class Subscriptions:
    def __init__(self) -> None:
        self._subs: dict[tuple[str, str], list[_Sub]] = defaultdict(list)
        self._lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # the running publisher's

    def subscribe(
        self, tenant: str, table: str, limit: int = 0, buffer_bytes: int = BUFFER_BYTES
    ) -> _Sub:
        """A new subscriber; ``QuotaExceeded`` when the tenant already has ``limit`` (0: none)."""
        sub = _Sub(asyncio.get_running_loop(), asyncio.Queue(), tenant, buffer_bytes)
        with self._lock:
            held = self.count(tenant)
            if limit and held >= limit:
                raise QuotaExceeded(
                    f"this tenant has {held} live subscriptions open, its quota; close one, "
                    "or ask an operator to raise quota 'subscribers'",
                    quota="subscribers", limit=limit,
                )  # fmt: skip
            self._subs[(tenant, table)].append(sub)
        return sub

    def count(self, tenant: str) -> int:
        return sum(len(subs) for (t, _), subs in self._subs.items() if t == tenant)

    def unsubscribe(self, tenant: str, table: str, sub: _Sub) -> None:
        with self._lock:
            subs = self._subs.get((tenant, table), [])
            if sub in subs:
                subs.remove(sub)

    def has_subscribers(self, tenant: str, table: str) -> bool:
        return bool(self._subs.get((tenant, table)))

    def publish(self, tenant: str, table: str, rows: pa.Table, kind: str = "rows") -> None:
        """Queue rows for every subscriber of the table (encoded once, on the publisher)."""
        if rows.num_rows == 0:
            return
        with self._lock:
            if not self._subs.get((tenant, table)):
                return
            if len(self._pending) >= PENDING_TABLES:
                # Encoding fell behind: the oldest rows give way, their readers re-read.
                dropped = self._pending.popleft()
                self._pending.append(_Pending(dropped.tenant, dropped.table, None))
            self._pending.append(_Pending(tenant, table, rows, kind))
            self._start_locked()
            self._wake.notify()

    def close(self) -> None:
        """Stop the publisher thread; rows still queued are dropped, a later publish restarts it."""
        with self._lock:
            self._stop.set()
            self._pending.clear()
            self._wake.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    def _start_locked(self) -> None:
        if self._thread is None:
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="headwater-subscriptions", daemon=True
            )
            self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        encoder = JsonRows()
        try:
            while True:
                with self._lock:
                    while not self._pending and not stop.is_set():
                        self._wake.wait()
                    if stop.is_set():
                        return
                    item = _take(self._pending)
                    subs = list(self._subs.get((item.tenant, item.table), []))
                if subs:
                    self._deliver(encoder, item, subs)
        finally:
            encoder.close()

    @staticmethod
    def _deliver(encoder: JsonRows, item: _Pending, subs: list[_Sub]) -> None:
        payload = RESYNC
        if item.rows is not None:
            try:
                rows = encoder.encode(item.rows)
                payload = b'{"kind":' + orjson.dumps(item.kind) + b',"rows":' + rows + b"}"
            except Exception as exc:  # one bad value must not end the feeds of every table
                log.error("subscription_encode_failed", table=item.table, error=repr(exc))
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left to read
                sub.loop.call_soon_threadsafe(_offer, sub, payload)


def _take(pending: deque[_Pending]) -> _Pending:
    """The next item, with the rows of the same table queued right behind it: one event."""
    item = pending.popleft()
    if item.rows is None:
        return item
    tables = [item.rows]
    while pending:
        nxt = pending[0]
        same = (nxt.tenant, nxt.table, nxt.kind) == (item.tenant, item.table, item.kind)
        if not same or nxt.rows is None or not nxt.rows.schema.equals(item.rows.schema):
            break
        tables.append(pending.popleft().rows)
    if len(tables) == 1:
        return item
    return _Pending(item.tenant, item.table, pa.concat_tables(tables), item.kind)


def _offer(sub: _Sub, payload: bytes) -> None:
    """Queue ``payload`` (on the subscriber's loop); past its buffer, the final event."""
    if sub.closed:
        return
    if sub.waiting + len(payload) > sub.limit_bytes:
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.closed = True
        payload = SLOW
        sub.waiting = 0
    sub.waiting += len(payload)
    sub.queue.put_nowait(payload)
