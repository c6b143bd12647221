"""One sink at work: follow a log topic from a durable cursor and deliver its rows.

Rows are read in chunks; each chunk is cut into requests that run concurrently (bounded
by the delivery's adaptive concurrency). A chunk is done when each of its requests is
delivered or dead-lettered. The cursor then moves past the longest run of done chunks,
in one store commit with their dead letters and the counters (flush sink → commit
offsets), so a crash replays at most the requests not yet committed, with the same keys.
Counters: ``produced = delivered + dead_lettered + pending``, always; a row counts as
dead-lettered once it is in the dead-letter table (until then it is pending).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pyarrow as pa
import structlog

from headwater.log.ports import Log, LogEntry
from headwater.pipelines.processes import WorkerLost
from headwater.sinks.dlq import DLQ_KEY, dead_letters, dlq_table, to_table
from headwater.sinks.http import Outcome
from headwater.sinks.outbox import Outbox, Ticket
from headwater.store.ports import ResultStore, ResultWrite

log = structlog.get_logger("headwater.sinks")

READ_ROWS = 10_000
COMMIT_GAP_S = 0.05  # a store commit has a fixed cost: at most ~20 per second per sink


@dataclass
class Totals:
    produced: int = 0
    delivered: int = 0
    dead: int = 0

    @property
    def pending(self) -> int:
        return self.produced - self.delivered - self.dead


@dataclass
class Chunk:
    start: int
    end: int
    rows: int
    read_at: float
    left: int = 0
    delivered: int = 0
    letters: list[dict[str, object]] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.left == 0


class SinkRunner:
    """Runs on the sinks' event loop (``SinkManager``); status reads come from any thread."""

    def __init__(
        self,
        tenant: str,
        name: str,
        topic: str,
        by_offset: bool,
        log_: Log,
        store: ResultStore,
        outbox: Outbox,
        erased: Callable[[list[LogEntry]], pa.Array | None] = lambda _: None,
    ) -> None:
        self.tenant, self.name, self.topic = tenant, name, topic
        self.consumer = f"sink:{name}"
        self.by_offset = by_offset  # stream rows (keys by offset) vs. result rows (by content)
        self._log, self._store, self.outbox = log_, store, outbox
        self._erased = erased  # a keep-mask of rows of erased data subjects, or None
        self.config = outbox.config
        self.offset = 0  # committed
        self.read_offset = 0
        self.committed = Totals()
        self.totals = Totals()
        self.error: str | None = None  # the last commit failed
        self.read_error: str | None = None  # the last read failed
        self.blocked = False  # the pending backlog is full: not reading
        self._lock = threading.Lock()
        self._chunks: deque[Chunk] = deque()
        self._tasks: set[asyncio.Task[None]] = set()  # deliveries and replays
        self._sending: set[asyncio.Task[None]] = set()  # deliveries
        self._lost = asyncio.Event()  # the outbox's worker process died: start over
        self._chunk_done = asyncio.Event()  # wakes the committer
        self._room = asyncio.Event()  # wakes the reader when the backlog was full
        self._commit_lock = asyncio.Lock()

    # the loop -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await self._restore()
        committer = asyncio.create_task(self._commit_loop(stop))
        try:
            while not stop.is_set():
                if self._lost.is_set():
                    await self._start_over()
                try:
                    await self._read_once(stop)
                    self.read_error = None
                except WorkerLost as exc:  # its requests went with the process
                    self.read_error = f"{type(exc).__name__}: {exc}"
                    self._lost.set()
                    await _first(stop.wait(), timeout=0.5)  # (a worker that cannot start)
                except Exception as exc:  # e.g. a read failed: try again from where it was
                    self.read_error = f"{type(exc).__name__}: {exc}"
                    log.error("sink_read_failed", sink=self.name, error=self.read_error)
                    await _first(stop.wait(), timeout=1.0)
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await committer
            await self.commit_done()
            await self.outbox.close()

    async def _restore(self) -> None:
        offsets = await asyncio.to_thread(self._store.consumer_offsets, self.tenant, self.consumer)
        state = await asyncio.to_thread(self._store.consumer_state, self.tenant, self.consumer)
        self.offset = self.read_offset = offsets.get(self.topic, 0)
        saved = orjson.loads(state) if state else {}
        with self._lock:
            self.committed = Totals(
                saved.get("delivered", 0) + saved.get("dead", 0),
                saved.get("delivered", 0),
                saved.get("dead", 0),
            )
            self.totals = Totals(**vars(self.committed))

    async def _read_once(self, stop: asyncio.Event) -> None:
        room = self.config.max_pending_rows - self.totals.pending
        self.blocked = room <= 0
        if self.blocked:
            self._room.clear()
            await _first(self._room.wait(), stop.wait(), timeout=0.5)
            return
        entries = await self._gather(min(room, READ_ROWS), stop)
        if entries:
            tickets = await self.outbox.requests(entries, self._erased(entries))
            self._start_chunks(tickets, entries[-1].end)

    async def _gather(self, max_rows: int, stop: asyncio.Event) -> list[LogEntry]:
        """Rows from the cursor on; waits up to ``batch_age_ms`` to fill one request."""
        cfg = self.config
        offset = self.read_offset
        if self.by_offset and offset < self._log.start_offset(self.topic):
            return await asyncio.to_thread(self._stored, offset, max_rows)
        entries = await asyncio.to_thread(self._log.read, self.topic, offset, max_rows)
        if not entries:
            await self._log.wait(self.topic, offset, 0.2)  # wakes this loop, holds no thread
            return []
        deadline = time.monotonic() + cfg.batch_age_ms / 1000
        rows = sum(e.batch.num_rows for e in entries)
        while rows < min(cfg.batch_rows, max_rows) and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            end = entries[-1].end
            if await self._log.wait(self.topic, end, min(left, 0.2)):
                more = await asyncio.to_thread(self._log.read, self.topic, end, max_rows - rows)
                entries += more
                rows += sum(e.batch.num_rows for e in more)
        return _at_most(entries, max_rows)

    def _stored(self, offset: int, max_rows: int) -> list[LogEntry]:
        """Stream rows the log no longer holds (retention), read back from the stream's
        table; one entry per run of consecutive offsets (erasures leave gaps)."""
        start = self._log.start_offset(self.topic)
        stream = self.topic[len(self.tenant) + 1 :]  # the topic is "tenant.stream"
        rows = self._store.rows_by_offset(self.tenant, stream, offset, start, max_rows)
        if not rows.num_rows:
            self.read_offset = start  # nothing stored below the log's start
            return []
        offsets = rows.column("_offset").to_numpy()
        cuts = [0, *(np.flatnonzero(np.diff(offsets) != 1) + 1).tolist(), rows.num_rows]
        batch = rows.combine_chunks().to_batches()[0]
        return [
            LogEntry(self.topic, int(offsets[a]), batch.slice(a, b - a))
            for a, b in itertools.pairwise(cuts)
        ]

    def _start_chunks(self, reqs: list[Ticket], end: int) -> None:
        """Cut the requests into chunks of ``max_concurrency``: the cursor moves by chunk,
        so a crash repeats about one window of requests."""
        cfg = self.config
        self.read_offset = end
        if not reqs:  # every row left out (erased): nothing to deliver, move on
            self._chunks.append(Chunk(end, end, 0, time.monotonic(), 0))
            self._chunk_done.set()
            return
        now = time.monotonic()
        step = cfg.max_concurrency
        for i in range(0, len(reqs), step):
            group = reqs[i : i + step]
            first, last = group[0].first, group[-1].last
            n = sum(r.rows for r in group)
            chunk = Chunk(first, last + 1, n, now, len(group))
            with self._lock:
                self.totals.produced += n
            self._chunks.append(chunk)
            for req in group:
                task = asyncio.create_task(self._deliver(chunk, req))
                self.track(task)
                self._sending.add(task)
                task.add_done_callback(self._sending.discard)

    async def _start_over(self) -> None:
        """The outbox's worker process died, and the requests in flight with it: commit
        what was done, drop the rest and read again from the cursor (with the same keys,
        as after a crash)."""
        self._lost.clear()
        async with self._commit_lock:
            await self._commit_done()
            for t in list(self._sending):
                t.cancel()
            await asyncio.gather(*self._sending, return_exceptions=True)
            with self._lock:
                self._chunks.clear()
                self.totals = Totals(**vars(self.committed))
            self.read_offset = self.offset
        log.warning("sink_started_over", sink=self.name, offset=self.offset)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep ``task`` until it ends; stopping the sink cancels it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, chunk: Chunk, req: Ticket) -> None:
        try:
            out, dead = await self.outbox.deliver(req)
        except WorkerLost:
            self._lost.set()  # the read loop starts over from the cursor
            return
        with self._lock:
            chunk.delivered += req.rows - len(dead)
            self.totals.delivered += req.rows - len(dead)
            if dead:  # counted as dead-lettered once in the table (``commit_done``)
                chunk.letters += dead_letters(dead, out)
        chunk.left -= 1
        self._room.set()
        if chunk.done:
            self._chunk_done.set()
        if dead:
            log.warning("sink_dead_letter", sink=self.name, key=req.key, error=out.error)

    # commits ------------------------------------------------------------------------
    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _first(self._chunk_done.wait(), stop.wait(), timeout=1.0)
            self._chunk_done.clear()
            try:
                await self.commit_done()
                self.error = None
            except Exception as exc:  # the next pass retries: nothing moved
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("sink_commit_failed", sink=self.name, error=self.error)
            await asyncio.sleep(COMMIT_GAP_S)

    async def commit_done(self) -> None:
        """Move the cursor past the done chunks at the front, with their dead letters."""
        async with self._commit_lock:  # one writer of the counters at a time
            await self._commit_done()

    async def _commit_done(self) -> None:
        done: list[Chunk] = []
        for c in self._chunks:
            if not c.done:
                break
            done.append(c)
        if not done:
            return
        letters = [d for c in done for d in c.letters]
        delivered = sum(c.delivered for c in done)
        after = Totals(
            self.committed.produced + sum(c.rows for c in done),
            self.committed.delivered + delivered,
            self.committed.dead + len(letters),
        )
        await self.write(after, {self.topic: done[-1].end}, letters)
        with self._lock:
            for _ in done:
                self._chunks.popleft()
            self.offset = done[-1].end
            self.committed = after
            self.totals.dead += len(letters)

    async def write(
        self, after: Totals, offsets: dict[str, int], letters: list[dict[str, object]]
    ) -> None:
        """One store commit of the cursor, the counters and dead letters (upserted by key).

        Callers hold ``_commit_lock``: ``after`` is computed from ``committed`` under it."""
        state = orjson.dumps({"delivered": after.delivered, "dead": after.dead})
        upserts = {dlq_table(self.name): (to_table(letters), DLQ_KEY)} if letters else {}
        write = ResultWrite(self.consumer, offsets, upserts=upserts, state=state)
        await asyncio.to_thread(self._store.commit, self.tenant, write)

    # dead-letter replay ------------------------------------------------------------------
    async def mark_replaying(self, letters: list[dict[str, object]]) -> None:
        """Before a replay: a second replay skips these, a restart finishes them."""
        async with self._commit_lock:
            await self.write(self.committed, {}, [{**d, "state": "replaying"} for d in letters])

    async def replay(self, letters: list[dict[str, object]]) -> None:
        """Deliver dead letters (marked ``replaying``) again; delivered ones become ``replayed``."""
        results = await asyncio.gather(*(self._send_letter(d) for d in letters))
        ok = sum(1 for d in results if d["state"] == "replayed")
        async with self._commit_lock:
            c = self.committed
            after = Totals(c.produced, c.delivered + ok, c.dead - ok)
            await self.write(after, {}, list(results))
            with self._lock:  # counted once the table says so
                self.totals.delivered += ok
                self.totals.dead -= ok
                self.committed = after

    async def _send(self, body: bytes, key: str) -> Outcome:
        """``outbox.send``, again in a new worker process if the one sending it died."""
        for attempt in range(1, 4):
            try:
                return await self.outbox.send(body, key)
            except WorkerLost:
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    async def _send_letter(self, letter: dict[str, object]) -> dict[str, object]:
        text = str(letter["row"]).encode()
        body = text if self.config.batch_rows == 1 else b"[" + text + b"]"
        out: Outcome = await self._send(body, str(letter["key"]))
        if out.ok:
            return {**letter, "state": "replayed"}
        prior = letter.get("attempts") or 0
        return {
            **letter, "state": "dead", "attempts": int(str(prior)) + out.attempts,
            "last_status": out.status, "last_body": out.body, "error": out.error,
            "last_failure": out.last_failure_ms,
        }  # fmt: skip

    # views ------------------------------------------------------------------------
    def snapshot(self) -> tuple[Totals, float]:
        """The counters (consistent) and the age in seconds of the oldest pending chunk."""
        with self._lock:
            totals = Totals(**vars(self.totals))
            oldest = self._chunks[0].read_at if self._chunks else None
        return totals, (time.monotonic() - oldest) if oldest is not None else 0.0


def _at_most(entries: list[LogEntry], max_rows: int) -> list[LogEntry]:
    """The first ``max_rows`` rows of ``entries`` (the log returns a big entry whole)."""
    out: list[LogEntry] = []
    for e in entries:
        n = e.batch.num_rows
        if n >= max_rows:
            out.append(LogEntry(e.topic, e.offset, e.batch.slice(0, max_rows), e.meta))
            break
        out.append(e)
        max_rows -= n
    return out


async def _first(*aws: Awaitable[object], timeout: float) -> None:
    """Wait until the first of ``aws`` finishes (or ``timeout``); cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
