"""The pull-source runtime: one asyncio task per running source, readers in threads.

A source kind (``PullSource``) lists its partitions; a ``Reader`` opened for a partition
at its last committed position yields ``Chunk``s. Each chunk goes through
``Acceptor.accept`` with its ``Origin``, which writes the partition's new position in the
same durable log entry; only then is the chunk's ``done`` called (an MQTT reader acks its
messages there). Reads block in worker threads, never on the event loop.

Pushback (the store too far behind the log) and the tenant's ingest quotas hold the chunk
and wait: the source shows ``backing_off`` and nothing is dropped. A failure of the counterpart (broker down, file
unreadable) backs off exponentially with full jitter and starts again from the committed
positions; a configuration the kind refuses marks the source ``failed`` with the reason.
This module imports no web framework: the API only calls ``start``/``stop``/``changed``.
"""

from __future__ import annotations

import asyncio
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import structlog

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import (
    DONE,
    Chunk,
    End,
    Kinds,
    Positions,
    PullSource,
    Reader,
    Relisting,
    SourceFailed,
)
from headwater.connectors.sources.positions import PositionFile, Recovered, recover
from headwater.connectors.sources.registry import Sources, SourceStats
from headwater.errors import BadRequest, HeadwaterError, Overloaded, RateLimited
from headwater.ingest.accept import Acceptor, Origin
from headwater.ingest.answers import answer_topics
from headwater.ingest.streams import StreamDirectory, StreamState
from headwater.log.ports import Log
from headwater.observability import metrics as m
from headwater.pipelines.processes import WorkerLost

log = structlog.get_logger("headwater.sources")

READ_TIMEOUT_S = 0.5
RELIST_S = 1.0
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 30.0
# closing a reader may wait on a broker: its own threads, which run what they are given
_CLOSING = ThreadPoolExecutor(4, thread_name_prefix="source-close")


SourceKey = tuple[str, str, int]  # tenant, name, epoch (the source's creation time)


class SourceRuntime:
    def __init__(
        self, sources: Sources, streams: StreamDirectory, acceptor: Acceptor,
        positions: PositionFile, kinds: Kinds, log_: Log,
    ) -> None:  # fmt: skip
        self._sources = sources
        self._streams = streams
        self._acceptor = acceptor
        self._positions = positions
        self._kinds = kinds
        self._log = log_
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._forgetting: set[asyncio.Task[None]] = set()
        sources.listeners.append(self.changed)

    async def start(self) -> None:
        for rec in self._sources.all():
            self.changed(rec)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def changed(self, rec: SourceRecord, dropped: bool = False) -> None:
        """Start or stop the source's task to match its record (create, pause, resume, drop)."""
        if rec.kind not in self._kinds:
            return
        key = (rec.tenant, rec.name)
        want = rec.status == "running" and not dropped
        task = self._tasks.get(key)
        if task is not None and (not want or task.done()):
            task.cancel()
            del self._tasks[key]
            task = None
        if dropped:
            self._positions.forget(rec.tenant, rec.name)
            self._forget(rec)
        if want and task is None:
            self._tasks[key] = asyncio.create_task(self._run(rec), name=f"source:{rec.name}")

    def _forget(self, rec: SourceRecord) -> None:
        """Let a deleted source's counterpart forget it too (e.g. an MQTT session)."""
        try:
            kind = self._kinds[rec.kind](rec)
        except HeadwaterError:
            return
        forget = getattr(kind, "forget", None)
        if forget is None:
            return

        async def run() -> None:
            try:
                await asyncio.to_thread(forget)
            except Exception as exc:  # the broker may be gone: nothing left to forget then
                log.info("source_forget_failed", source=rec.name, error=str(exc))

        task = asyncio.create_task(run(), name=f"forget:{rec.name}")
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _run(self, rec: SourceRecord) -> None:
        stats = self._sources.stats(rec)
        delay = BACKOFF_MIN_S
        while True:
            try:
                await self._run_once(rec, stats)
                delay = BACKOFF_MIN_S
            except asyncio.CancelledError:
                raise
            except SourceFailed as exc:
                stats.state, stats.reason, stats.last_error = "failed", exc.message, exc.message
                log.warning("source_failed", source=rec.name, reason=exc.message)
                return
            except Exception as exc:
                stats.state, stats.reason = "backing_off", f"{type(exc).__name__}: {exc}"
                stats.last_error = stats.reason
                m.SOURCE_BACKOFFS.labels(rec.tenant, rec.name, "error").inc()
                log.warning("source_backing_off", source=rec.name, error=stats.reason)
                await asyncio.sleep(random.uniform(0, delay))  # full jitter
                delay = min(BACKOFF_MAX_S, delay * 2)

    async def _run_once(self, rec: SourceRecord, stats: SourceStats) -> None:
        try:
            kind = self._kinds[rec.kind](rec)
            st = self._streams.get(rec.tenant, rec.stream)
        except HeadwaterError as exc:
            raise SourceFailed(exc.message) from exc
        got = await asyncio.to_thread(
            recover, self._log, self._positions, rec.tenant, rec.name, rec.created_ms,
            answer_topics(st),
        )  # fmt: skip
        # Here on the loop, not in the thread: a source dropped meanwhile was cancelled at
        # the await above, and its forgotten positions are not written back.
        self._keep(rec.tenant, rec.name, got)
        found = got.positions
        seq = max((s for _, s in found.values()), default=0)
        stats.positions.update({p: pos for p, (pos, _) in found.items()})
        try:
            while True:
                parts = await asyncio.to_thread(kind.partitions, found)
                stats.state, stats.reason = "running", None
                for part in parts:
                    seq = await self._pump(rec, st, kind, part, found, seq, stats)
                await asyncio.sleep(RELIST_S)
        finally:
            end = getattr(kind, "close", None)  # a kind with a process of its own
            if end is not None:
                await asyncio.shield(asyncio.wrap_future(_CLOSING.submit(end)))

    async def _pump(
        self, rec: SourceRecord, st: StreamState, kind: PullSource, part: str,
        found: Positions, seq: int, stats: SourceStats,
    ) -> int:  # fmt: skip
        """Read one partition until it ends or goes quiet; return the source's last seq."""
        start = found.get(part, (None, 0))[0]
        key = (rec.tenant, rec.name, rec.created_ms)
        try:
            reader = await _open(kind, part, start)
        except Exception as exc:
            if not isinstance(kind, Relisting) or isinstance(exc, WorkerLost):
                raise  # a connection, or the reader's process: back off and try again
            return await self._unreadable(key, st, part, exc, found, seq, stats)
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(reader.read, READ_TIMEOUT_S)
                except Exception as exc:
                    if not isinstance(kind, Relisting) or isinstance(exc, WorkerLost):
                        raise  # not the file's fault: back off, open it again
                    return await self._unreadable(key, st, part, exc, found, seq, stats)
                if chunk is None:
                    self._waiting(rec, reader, stats)
                    if isinstance(kind, Relisting):
                        return seq
                    continue
                if isinstance(chunk, End):
                    return seq
                seq += 1
                await self.commit(key, st, chunk, seq, stats)
                found[part] = (chunk.position, seq)
        finally:
            await _close(reader)

    @staticmethod
    def _waiting(rec: SourceRecord, reader: Reader, stats: SourceStats) -> None:
        """A reader that the counterpart asked to wait (an HTTP ``Retry-After``) says why
        in ``reader.waiting``: the source shows ``backing_off`` meanwhile."""
        why = getattr(reader, "waiting", None)
        if why:
            if stats.reason != why:
                m.SOURCE_BACKOFFS.labels(rec.tenant, rec.name, "remote").inc()
            stats.state, stats.reason, stats.last_error = "backing_off", why, why
        elif stats.state == "backing_off":
            stats.state, stats.reason = "running", None

    async def _unreadable(
        self, key: SourceKey, st: StreamState, part: str, exc: Exception, found: Positions,
        seq: int, stats: SourceStats,
    ) -> int:  # fmt: skip
        """A file that cannot be read: one quarantined row says why, and it is done (a
        file that vanished is simply gone)."""
        if isinstance(exc, FileNotFoundError):
            return seq
        tenant, name, epoch = key
        problem = BadRequest(f"{type(exc).__name__}: {exc}", code="unreadable_file")
        seq += 1
        origin = Origin(name, part, DONE, epoch)
        result = await self._acceptor.refuse(st, problem, part, origin, seq)
        self._positions.save(tenant, name, part, DONE, seq, result.topic, result.end_offset)
        found[part] = (DONE, seq)
        stats.positions[part] = DONE
        stats.rows_rejected += 1
        stats.last_error = f"{part.split('|')[0]}: {problem.message}"
        m.SOURCE_ROWS.labels(tenant, name, "rejected").inc()
        return seq

    async def import_file(
        self, tenant: str, name: str, st: StreamState, reader: Reader, stats: SourceStats
    ) -> SourceStats:
        """Import one file to its end through ``accept`` (an upload): resumable, since its
        position is committed under ``name`` like a source's."""
        key = (tenant, name, 0)
        got = await asyncio.to_thread(
            recover, self._log, self._positions, tenant, name, 0, answer_topics(st)
        )
        self._keep(tenant, name, got)
        found = got.positions
        seq = max((s for _, s in found.values()), default=0)
        try:
            while not isinstance(chunk := await asyncio.to_thread(reader.read, 0), End):
                if chunk is not None:
                    seq += 1
                    await self.commit(key, st, chunk, seq, stats)
        finally:
            await _close(reader)
        stats.state = "done"
        return stats

    def committed(self, tenant: str, name: str, st: StreamState) -> Positions:
        return recover(self._log, self._positions, tenant, name, 0, answer_topics(st)).positions

    def _keep(self, tenant: str, name: str, got: Recovered) -> None:
        """Copy the commits a start found only in the log into the position file: later
        commits move its progress past them, and the next start would miss them."""
        if got.unsaved or got.read_to:
            self._positions.keep(tenant, name, got)

    async def commit(
        self, key: SourceKey, st: StreamState, chunk: Chunk, seq: int, stats: SourceStats
    ) -> None:
        """Accept a chunk once admitted, record its position, then tell the reader."""
        tenant, name, epoch = key
        origin = Origin(name, chunk.partition, chunk.position, epoch)
        while True:  # pushed back or over quota: hold the chunk and wait, never drop it
            try:
                result = await self._acceptor.accept(st, chunk.data, chunk.fmt, origin, seq)
                break
            except (Overloaded, RateLimited) as exc:
                why = "pushback" if isinstance(exc, Overloaded) else "quota"
                stats.state, stats.reason = "backing_off", f"{why}: {exc.message}"
                m.SOURCE_BACKOFFS.labels(tenant, name, why).inc()
                await asyncio.sleep(exc.retry_after_s)
        stats.state, stats.reason = "running", None
        self._positions.save(tenant, name, chunk.partition, chunk.position, seq,
                             result.topic, result.end_offset)  # fmt: skip
        if chunk.done is not None:
            await asyncio.to_thread(chunk.done)
        for outcome, n in (("accepted", result.accepted), ("rejected", result.rejected),
                           ("duplicate", result.duplicates)):  # fmt: skip
            if n:
                m.SOURCE_ROWS.labels(tenant, name, outcome).inc(n)
        stats.rows_in += result.accepted
        stats.rows_rejected += result.rejected
        stats.duplicates += result.duplicates
        stats.deliveries += 1
        stats.position = chunk.position
        stats.positions[chunk.partition] = chunk.position
        stats.lag = chunk.lag
        if result.errors:
            e = result.errors[0]
            stats.last_error = f"row rejected: {e.code}: {e.message}"


async def _open(kind: PullSource, part: str, start: str | None) -> Reader:
    """Open a reader in a thread; if the source stops meanwhile, the reader is closed as
    soon as it is open (no file or connection is left behind)."""
    opening = _Opening(kind, part, start)
    opened = asyncio.get_running_loop().run_in_executor(None, opening.run)
    try:
        return await asyncio.shield(opened)
    except asyncio.CancelledError:
        opening.abandon()
        raise


class _Opening:
    """An open that may be abandoned: whichever of ``run`` and ``abandon`` comes second
    closes the reader, on a pool thread (never on the event loop)."""

    def __init__(self, kind: PullSource, part: str, start: str | None) -> None:
        self._kind, self._part, self._start = kind, part, start
        self._lock = threading.Lock()
        self._reader: Reader | None = None
        self._abandoned = False

    def run(self) -> Reader:
        reader = self._kind.open(self._part, self._start)
        with self._lock:
            self._reader = reader
            abandoned = self._abandoned
        if abandoned:
            reader.close()
        return reader

    def abandon(self) -> None:
        with self._lock:
            self._abandoned = True
            reader = self._reader
        if reader is not None:
            _CLOSING.submit(reader.close)


async def _close(reader: Reader) -> None:
    """Close a reader in a thread. A cancel does not skip the close: it is submitted to
    the pool before the wait, and a pool runs what it was given (``asyncio.to_thread``
    would drop the call if cancelled before a thread took it, leaving a file open)."""
    await asyncio.shield(asyncio.wrap_future(_CLOSING.submit(reader.close)))
