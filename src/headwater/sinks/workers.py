"""Sinks' outboxes in worker processes (``sink_workers``): rows encoded and delivered
beside the server, on another core.

A sink's per-row work is its outbox's: rows to JSON, requests cut under their keys, and
the HTTP, Kafka or NATS client that delivers them. With ``sink_workers = N`` (N > 0) that
work runs in N worker processes, each an event loop hosting many sinks' outboxes. The
runner stays in the server: it reads the log, keeps the chunks and commits the cursor,
counters and dead letters to the store as before, so the delivery guarantees are the
same. What crosses the pipe is the log entries (Arrow buffers, out of band), a ticket per
request, and each request's outcome (with its dead rows).

Calls overlap (a sink has many requests in flight): each carries an id, and the answers
come back in any order. Every sink to one destination goes to the same worker, so one
circuit breaker per destination still holds. A worker that dies is started again; its
sinks' runners drop what was in flight and read again from their cursors, with the same
idempotency keys, as after a crash. Workers start at their first sink's first rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import pickle
import signal
import socket
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa
import structlog

from headwater.errors import HeadwaterError
from headwater.log.ports import LogEntry
from headwater.observability import metrics as m
from headwater.pipelines.processes import READY_TIMEOUT_S, WorkerLost, sendable, spawn
from headwater.sinks.http import Outcome, Stats
from headwater.sinks.outbox import LocalOutbox, LocalOutboxes, Ticket, breaker_of, destination
from headwater.sinks.ports import Options
from headwater.sinks.rows import Row

log = structlog.get_logger("headwater.sinks")

STATUS_EVERY_S = 0.2  # how stale a remote outbox's figures may get
HEAD = struct.Struct("<QI")  # a frame: pickle length, buffer count; then buffer lengths


@dataclass(frozen=True)
class Seen:
    """A remote delivery's concurrency as its worker last reported it."""

    limit: int
    used: int


# frames: a pickle with its Arrow buffers out of band ----------------------------------


def write_frame(writer: asyncio.StreamWriter, message: Any) -> None:
    """Queue ``message`` on ``writer`` (whole: a frame is never split by another)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    writer.write(HEAD.pack(len(head), len(raws)) + struct.pack(f"<{len(raws)}Q", *map(len, raws)))
    writer.write(head)
    for r in raws:
        writer.write(r)


async def read_frame(reader: asyncio.StreamReader) -> Any:
    size, n = HEAD.unpack(await reader.readexactly(HEAD.size))
    lengths = struct.unpack(f"<{n}Q", await reader.readexactly(8 * n)) if n else ()
    head = await reader.readexactly(size)
    buffers = [await reader.readexactly(k) for k in lengths]
    return pickle.loads(head, buffers=buffers)


# the server side ----------------------------------------------------------------------


class SinkWorker:
    """One sink worker process and the pipe to it, used from the sinks' event loop."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.generation = 0  # one more at each (re)start: tickets of an earlier one are gone
        self.mirrors: dict[int, RemoteOutbox] = {}  # by sink id: where figures go
        self._proc: subprocess.Popen[bytes] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._starting = asyncio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def ensure(self) -> int:
        """Start the process if it is not running; return its generation."""
        async with self._starting:
            if self._closed:
                raise WorkerLost(f"sink worker {self.index} is closed")
            if self._writer is None:
                await self._start()
            return self.generation

    async def _start(self) -> None:
        proc, sock = await asyncio.to_thread(spawn, __name__, [])
        try:
            reader, writer = await asyncio.open_unix_connection(sock=sock)
            kind, _, value = await asyncio.wait_for(read_frame(reader), READY_TIMEOUT_S)
            if kind != "ready":
                raise HeadwaterError(str(value))
        except Exception as exc:
            sock.close()
            await asyncio.to_thread(_end, proc, 0)
            raise WorkerLost(f"sink worker {self.index} did not start: {exc!r}") from exc
        self._proc, self._writer = proc, writer
        self.generation += 1
        m.SINK_WORKERS.inc()
        self._reading = asyncio.create_task(self._read(reader))
        log.info("worker_started", role="sink", worker=self.index, pid=proc.pid)

    async def call(self, op: str, sid: int, args: Any, generation: int) -> Any:
        """Send ``op`` for sink ``sid`` to the process of ``generation``; its answer."""
        writer = self._writer
        if writer is None or generation != self.generation:
            raise WorkerLost(f"sink worker {self.index} was restarted; its requests are gone")
        cid = next(self._ids)
        answer = self._calls[cid] = asyncio.get_running_loop().create_future()
        try:
            write_frame(writer, (cid, op, sid, args))
            await writer.drain()
            return await answer
        except (ConnectionError, OSError) as exc:
            raise WorkerLost(f"sink worker {self.index} died: {exc!r}") from exc
        finally:
            self._calls.pop(cid, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, cid, value = await read_frame(reader)
                if kind == "status":
                    if (mirror := self.mirrors.get(cid)) is not None:
                        mirror.seen(value)
                    continue
                answer = self._calls.get(cid)
                if answer is None or answer.done():
                    continue  # its caller was cancelled
                if kind == "ok":
                    answer.set_result(value)
                else:
                    answer.set_exception(value)
        except Exception as exc:  # the pipe ended, or a frame made no sense: start again
            if not self._closed:
                await self._lost(exc)

    async def _lost(self, exc: BaseException) -> None:
        proc, writer, self._proc, self._writer = self._proc, self._writer, None, None
        code = proc.poll() if proc is not None else None
        log.error("worker_lost", role="sink", worker=self.index, exit_code=code, error=repr(exc))
        for answer in self._calls.values():
            if not answer.done():
                answer.set_exception(WorkerLost(f"sink worker {self.index} died: {exc!r}"))
        if writer is not None:
            writer.close()
        if proc is not None:
            m.SINK_WORKERS.dec()
            await asyncio.to_thread(_end, proc, 5)
        m.SINK_WORKER_RESTARTS.inc()
        try:
            await self.ensure()
        except WorkerLost as failed:  # the next call tries again
            log.error("worker_not_restarted", role="sink", worker=self.index, error=str(failed))

    async def close(self) -> None:
        self._closed = True
        proc, writer, self._proc, self._writer = self._proc, self._writer, None, None
        if writer is not None:
            writer.close()  # the worker reads EOF, closes its clients and ends
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)
        if proc is not None:
            m.SINK_WORKERS.dec()
            await asyncio.to_thread(_end, proc, 10)


def _end(proc: subprocess.Popen[bytes], wait_s: float) -> None:
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SinkWorkers:
    """``n`` sink worker processes: the ``Outboxes`` of a server with ``sink_workers``."""

    def __init__(self, n: int) -> None:
        self.workers = [SinkWorker(i) for i in range(n)]
        self._sids = itertools.count(1)

    def open(self, sink: str, by_offset: bool, config: Options) -> RemoteOutbox:
        """The worker of the sink's destination (so its breaker is one), by a stable hash."""
        key = zlib.crc32(destination(config).encode())
        worker = self.workers[key % len(self.workers)]
        return RemoteOutbox(worker, next(self._sids), sink, by_offset, config)

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))

    def pids(self) -> list[int]:
        return [pid for w in self.workers if (pid := w.pid) is not None]


class RemoteOutbox:
    """An ``Outbox`` whose requests are cut and delivered in a sink worker."""

    def __init__(
        self, worker: SinkWorker, sid: int, sink: str, by_offset: bool, config: Options
    ) -> None:
        self.config = config
        self.stats = Stats()
        self.breaker = breaker_of(config)
        self.slots = Seen(config.max_concurrency, 0)
        self._worker, self._sid = worker, sid
        self._opening = (sink, by_offset, config)
        self._epoch = 0  # the worker generation it was opened on; 0: not opened
        worker.mirrors[sid] = self

    @property
    def pid(self) -> int | None:
        return self._worker.pid

    def seen(self, figures: tuple[Stats, Any, int, int]) -> None:
        self.stats, self.breaker, limit, used = figures
        self.slots = Seen(limit, used)

    async def _open(self) -> int:
        generation = await self._worker.ensure()
        if self._epoch != generation:
            await self._worker.call("open", self._sid, self._opening, generation)
            self._epoch = generation
        return generation

    async def requests(self, entries: list[LogEntry], keep: pa.Array | None) -> list[Ticket]:
        generation = await self._open()
        tickets: list[Ticket]
        tickets = await self._worker.call("requests", self._sid, (entries, keep), generation)
        return [replace(t, epoch=generation) for t in tickets]

    async def deliver(self, ticket: Ticket) -> tuple[Outcome, list[Row]]:
        done: tuple[Outcome, list[Row]]
        done = await self._worker.call("deliver", self._sid, ticket, ticket.epoch)
        return done

    async def send(self, body: bytes, key: str) -> Outcome:
        generation = await self._open()
        out: Outcome = await self._worker.call("send", self._sid, (body, key), generation)
        return out

    async def close(self) -> None:
        self._worker.mirrors.pop(self._sid, None)
        if self._epoch:
            with contextlib.suppress(WorkerLost):
                await self._worker.call("close", self._sid, None, self._epoch)


# the worker side ----------------------------------------------------------------------


class Host:
    """A sink worker's outboxes, by sink id; answers the server's calls."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._outboxes = LocalOutboxes()  # one breaker per destination, as in a server
        self._open: dict[int, LocalOutbox] = {}
        self._reported: dict[int, tuple[Stats, Any, int, int]] = {}

    async def handle(self, cid: int, op: str, sid: int, args: Any) -> None:
        try:
            reply: tuple[str, int, Any] = ("ok", cid, await self._run(op, sid, args))
        except Exception as exc:
            reply = ("err", cid, sendable(exc))
        with contextlib.suppress(ConnectionError, OSError):  # the server is gone: we end
            try:
                write_frame(self._writer, reply)
            except Exception as exc:  # an answer that does not pickle: say why instead
                write_frame(self._writer, ("err", cid, sendable(exc)))
            await self._writer.drain()

    async def _run(self, op: str, sid: int, args: Any) -> Any:
        if op == "open":
            if sid not in self._open:  # once per process: a second open keeps the first
                sink, by_offset, config = args
                self._open[sid] = self._outboxes.open(sink, by_offset, config)
            return None
        outbox = self._open[sid]
        if op == "requests":
            return await outbox.requests(*args)
        if op == "deliver":
            return await outbox.deliver(args)
        if op == "send":
            return await outbox.send(*args)
        if op == "close":
            del self._open[sid]
            self._reported.pop(sid, None)
            await outbox.close()
            return None
        raise ValueError(f"unknown sink worker call {op!r}")

    async def report(self) -> None:
        """Send each outbox's figures when they changed, every ``STATUS_EVERY_S``."""
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            for sid, outbox in list(self._open.items()):
                s, slots = outbox.stats, outbox.slots
                figures = (replace(s, statuses=dict(s.statuses)), replace(outbox.breaker),
                           slots.limit, slots.used)  # fmt: skip
                if self._reported.get(sid) != figures:
                    self._reported[sid] = figures
                    write_frame(self._writer, ("status", sid, figures))
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.drain()

    async def close(self) -> None:
        for outbox in self._open.values():
            with contextlib.suppress(Exception):
                await outbox.close()


def serve(fd: int) -> None:
    """A sink worker process: host outboxes until the server closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us by closing the pipe
    asyncio.run(_serve(socket.socket(fileno=fd)))


async def _serve(sock: socket.socket) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    host = Host(writer)
    write_frame(writer, ("ready", 0, None))
    await writer.drain()
    reporting = asyncio.create_task(host.report())
    calls: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                cid, op, sid, args = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return
            call = asyncio.create_task(host.handle(cid, op, sid, args))
            calls.add(call)
            call.add_done_callback(calls.discard)
    finally:
        for t in (reporting, *calls):
            t.cancel()
        await asyncio.gather(reporting, *calls, return_exceptions=True)
        await host.close()


if __name__ == "__main__":  # a sink worker process, started by ``SinkWorker._start``
    serve(int(sys.argv[1]))
