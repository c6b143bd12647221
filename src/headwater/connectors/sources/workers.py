"""Pull sources whose readers run in a process of their own (``source_processes``).

A source's client can cost real CPU in Python (paho decodes every MQTT packet, 40–60 µs a
message); in a process of its own it does not share the server's interpreter lock. Only
the ``Reader`` moves: ``open``, ``read``, ``close`` and a chunk's ``done`` (its
acknowledgement, sent once the chunk is durable) go over the pipe of a ``Worker``. The
server keeps ``accept``, the position commit and the listing of partitions, so the
delivery guarantees are the same. A dead process is a reader that failed: the source
backs off, and opens again at its committed position in a new one.

The worker reads one chunk ahead: having answered a ``read`` with a chunk, it reads the
next in a thread while the server accepts that one, so reading and accepting overlap
(two processes, two cores). Nothing else changes for the server: a chunk's ``done`` is
still called only when the server says the chunk is durable, and the server still
commits the position of the chunk it accepted. The chunk read ahead is the server's only
at its next ``read``: it is never acknowledged before that, a process killed with it
loses nothing (the source reopens at its committed position), and a source held back
(pushback, quota) holds one chunk in the server and at most one here. A reader whose
``read`` must not run before the previous chunk's ``done`` sets ``reads_ahead`` false
(PostgreSQL CDC's changes: its reads start from the slot, which ``done`` moves).

One process per source, started at its first open and ended with its run.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater.connectors.sources.ports import (
    Chunk,
    End,
    Kinds,
    Positions,
    PullSource,
    Reader,
    Relisting,
)
from headwater.errors import HeadwaterError
from headwater.pipelines.processes import (
    Worker,
    WorkerLost,
    receive_message,
    send_message,
    sendable,
)

if TYPE_CHECKING:
    from headwater.catalog.sqlite import SourceRecord


def remote_kinds(kinds: Kinds, file_root: Path) -> Kinds:
    """The same kinds, each source's readers in a process of its own."""

    def remote(name: str) -> Any:
        def make(rec: SourceRecord) -> PullSource:
            local = kinds[name](rec)  # its config is checked here, in the server
            cls = RemoteRelisting if isinstance(local, Relisting) else RemoteSource
            return cls(local, rec, file_root)

        return make

    return {name: remote(name) for name in kinds}


class RemoteSource:
    """A ``PullSource`` whose readers run in a worker process; ``close`` ends it."""

    def __init__(self, local: PullSource, rec: SourceRecord, file_root: Path) -> None:
        self._local, self._rec = local, rec
        # a counterpart to let go of when the source is deleted (an MQTT session)
        self.forget: Callable[[], None] | None = getattr(local, "forget", None)
        self._worker = Worker(0, [str(file_root)], module=__name__, role="source")
        self._started = False
        self._committed: Positions = {}  # what the last listing was told: ``open`` may use it
        self._keys = iter(range(1, 1 << 62))

    def partitions(self, committed: Positions) -> list[str]:
        self._committed = dict(committed)
        return self._local.partitions(committed)

    def open(self, partition: str, position: str | None) -> Reader:
        if not self._started:
            try:
                self._worker.start()
            except HeadwaterError as exc:  # the process's fault, not the partition's
                raise WorkerLost(exc.message) from exc
            self._started = True
        key = next(self._keys)
        opening = (self._rec, self._committed, partition, position)
        built = self._worker.build(key, opening, _no_questions)
        return RemoteReader(self._worker, key, built)

    @property
    def pid(self) -> int | None:
        return self._worker.pid

    def close(self) -> None:
        self._worker.close()


class RemoteRelisting(RemoteSource, Relisting):
    """A ``RemoteSource`` of a kind with many partitions (a directory of files)."""


class RemoteReader:
    """The server's side of a reader in a worker process."""

    def __init__(self, worker: Worker, key: int, built: int) -> None:
        self._worker, self._key, self._built = worker, key, built
        self.waiting: str | None = None  # the reader's ``waiting`` (a poll's Retry-After)

    def read(self, timeout_s: float) -> Chunk | End | None:
        answer: tuple[Chunk | End | None, bool, str | None] = self._call("read", timeout_s)
        got, acked, self.waiting = answer
        if isinstance(got, Chunk) and acked:
            got.done = self._done
        return got

    def _done(self) -> None:
        self._call("done", None)

    def close(self) -> None:
        with contextlib.suppress(WorkerLost):
            self._call("close", None)

    def _call(self, op: str, args: Any) -> Any:
        return self._worker.call(op, self._key, args, _no_questions, self._built)


def _no_questions(kind: str, value: Any) -> Any:
    raise HeadwaterError(f"a source worker asked for {kind!r}, which the server does not answer")


# the worker side ----------------------------------------------------------------------

Answer = tuple[Chunk | End | None, str | None]  # what a read gave, and the reader's ``waiting``


class Held:
    """A reader in the worker process; see the module doc for its read ahead."""

    def __init__(self, reader: Reader, pool: ThreadPoolExecutor) -> None:
        self.reader, self._pool = reader, pool
        self._done: Callable[[], None] | None = None  # of the chunk the server holds
        self._then: float | None = None  # the timeout of the read to make ahead, if any
        self._ahead: Future[Answer] | None = None

    def read(self, timeout_s: float) -> tuple[Chunk | End | None, bool, str | None]:
        """The chunk read ahead, else a read now."""
        ahead, self._ahead = self._ahead, None
        got, waiting = ahead.result() if ahead is not None else _read(self.reader, timeout_s)
        self._done, self._then = None, None
        if isinstance(got, Chunk):
            self._done, got.done = got.done, None  # kept here until the chunk is durable
            if getattr(self.reader, "reads_ahead", True):
                self._then = timeout_s
        return got, self._done is not None, waiting

    def read_ahead(self) -> None:
        """After a chunk (once it is sent: its bytes go out before the next read holds the
        interpreter), read the next in a thread while the server accepts this one. Only
        the server's next ``read`` takes it and starts another, so at most one chunk
        waits here and a source the server holds back stops reading."""
        if self._then is not None and self._ahead is None:
            self._ahead = self._pool.submit(_read, self.reader, self._then)
        self._then = None

    def acknowledge(self) -> None:
        """The chunk the server holds is durable. Its ``done`` may run beside the read
        ahead: every kind's ``done`` only queues its ack, or sends it on a client that
        takes calls from two threads (docs/sources.md, "Readers in processes of their own")."""
        done, self._done = self._done, None
        if done is not None:
            done()

    def close(self) -> None:
        """Wait for the read ahead (a read ends within its timeout) and close the reader.
        The chunk read ahead is dropped unacknowledged: the next open reads it again."""
        ahead, self._ahead, self._done, self._then = self._ahead, None, None, None
        if ahead is not None:
            wait([ahead])
        self.reader.close()


def _read(reader: Reader, timeout_s: float) -> Answer:
    return reader.read(timeout_s), getattr(reader, "waiting", None)


def serve(conn: Connection, file_root: str) -> None:
    """A source worker's loop: open, read, acknowledge and close readers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us by closing the pipe
    from headwater.connectors.sources.kinds import pull_kinds
    from headwater.model.time import SystemClock

    kinds = pull_kinds(Path(file_root), SystemClock())
    send_message(conn, ("ready", None))
    readers: dict[int, Held] = {}
    with ThreadPoolExecutor(thread_name_prefix="read-ahead") as pool:
        while True:
            try:
                op, key, args = receive_message(conn)
            except (EOFError, OSError):
                break
            held: Held | None = None
            try:
                answer: Any = None
                if op == "build":
                    rec, committed, partition, position = args
                    kind = kinds[rec.kind](rec)
                    kind.partitions(committed)  # as the server's listing did, before its open
                    readers[key] = Held(kind.open(partition, position), pool)
                elif op == "read":
                    held = readers[key]
                    answer = held.read(args)
                elif op == "done":
                    readers[key].acknowledge()
                elif op == "close":
                    readers.pop(key).close()
                else:
                    raise ValueError(f"unknown source worker call {op!r}")
                send_message(conn, ("ok", answer))
            except Exception as exc:
                send_message(conn, ("err", sendable(exc)))
            if held is not None:
                held.read_ahead()
        for held in readers.values():  # the server is gone: let the counterparts go
            with contextlib.suppress(Exception):
                held.close()


if __name__ == "__main__":  # a source worker process, started by ``RemoteSource.open``
    serve(Connection(int(sys.argv[1])), sys.argv[2])
