"""``FileLog``: the embedded durable log — append-only segment files, group-committed.

The file format, segments and recovery live in ``headwater.log.segment``.

One writer thread commits appends in groups: it writes everything pending, fdatasyncs
each file it touched once, and only then publishes the entries to readers and resolves
the appenders. A crash loses only unacknowledged entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import structlog

from headwater.errors import HeadwaterError
from headwater.log.memory import EndWaiters, entry_range, sliced
from headwater.log.ports import (
    TOPIC_RE,
    AppendResult,
    LogClosed,
    LogEntry,
    check_topic,
)
from headwater.log.recovery import check_committed, cut_tail, recover_topic
from headwater.log.segment import (
    HEADER,
    SEGMENT_SUFFIX,
    Segment,
    Topic,
    decode_entry,
    encode_header,
    encode_payload,
    entry_meta,
    fsync_dir,
    write_all,
)
from headwater.observability import metrics

log = structlog.get_logger("headwater.log")


@dataclass(slots=True, eq=False)
class Pending:
    """One append on its way through the writer thread."""

    topic: str
    offset: int
    rows: int
    meta_len: int
    parts: list[bytes | pa.Buffer]  # the payload; the writer puts the header in front
    size: int
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[AppendResult] | None = None
    done: threading.Event | None = None
    error: BaseException | None = None

    def result(self) -> AppendResult:
        return AppendResult(self.topic, self.offset, self.rows)


# ---------------------------------------------------------------- the log


class FileLog:
    """The embedded durable log (see the module docstring for the file format).

    ``append`` returns once the entry is fsynced; appends arriving together share one
    fsync. ``fsync=False`` acknowledges before data reaches the disk: a machine crash
    then loses acknowledged entries — only for throwaway data. One process owns a
    directory at a time (an advisory lock guards it).

    >>> import asyncio, tempfile, pyarrow as pa
    >>> log = FileLog(Path(tempfile.mkdtemp()))
    >>> log.append_blocking("default.readings", pa.record_batch({"x": [1, 2]}))
    AppendResult(topic='default.readings', offset=0, count=2)
    >>> log.read("default.readings", 1)[0].batch.to_pydict()
    {'x': [2]}
    >>> asyncio.run(log.close())
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: bool = True,
        committed: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Open (and recover) the log in ``directory``.

        ``committed`` maps topics to the offsets their consumers committed (consumer name
        -> offset): the log refuses to open (``LogCorrupted``) if a topic ends below one,
        so an offset a consumer has read past is never handed out again.
        """
        if segment_bytes < 1:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_directory(self.directory)
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._waiters = EndWaiters(self._lock, self._end_locked)
        self._queue: list[Pending] = []
        self._stopping = False
        self._closed = False
        self._failure: BaseException | None = None
        try:
            self._topics = self._recover(committed or {})
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._size = sum(s.written for t in self._topics.values() for s in t.files())
        metrics.LOG_SIZE_BYTES.set(self._size)
        self._writer = threading.Thread(
            target=self._run, name=f"log-writer:{self.directory}", daemon=True
        )
        self._writer.start()

    # ------------------------------------------------------------ appends

    async def append(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        """Append one entry; return once it is durable. Concurrent appends share fsyncs."""
        loop = asyncio.get_running_loop()
        item = self._enqueue(topic, batch, meta, loop=loop, future=loop.create_future())
        assert item.future is not None
        return await item.future

    def append_blocking(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        """``append`` for threads: block until the entry is durable. Not on an event loop."""
        item = self._enqueue(topic, batch, meta, done=threading.Event())
        assert item.done is not None
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result()

    def _enqueue(
        self,
        topic: str,
        batch: pa.RecordBatch,
        meta: bytes,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[AppendResult] | None = None,
        done: threading.Event | None = None,
    ) -> Pending:
        check_topic(topic)
        rows = batch.num_rows
        if rows == 0:
            raise ValueError(f"cannot append an empty batch to log topic {topic!r}")
        meta = bytes(meta)
        # Serialize here, in the caller. The writer thread checksums: zlib lets go of
        # the GIL on large buffers, so that runs beside the event loop, not on it.
        payload, payload_len = encode_payload(batch, meta)
        with self._lock:
            self._check_open()
            t = self._topics.get(topic)
            if t is None:
                t = self._topics[topic] = Topic(self.directory / topic)
            # Offsets are handed out and queued under one lock, so queue order is offset order.
            size = HEADER.size + payload_len
            item = Pending(topic, t.next, rows, len(meta), payload, size, loop, future, done)
            t.next += rows
            self._queue.append(item)
            self._work.notify()
        return item

    # ------------------------------------------------------------ reads

    def read(self, topic: str, offset: int, max_rows: int = 100_000) -> list[LogEntry]:
        """Durable entries from ``offset`` on, at most ``max_rows`` rows (see ``Log.read``)."""
        check_topic(topic)
        with self._lock:
            self._check_open(reading=True)
            t = self._topics.get(topic)
            offset = t.skip_gap(offset) if t else offset
            picked = entry_range(t.starts if t else (), t.end if t else 0, offset, max_rows)
            # Only the lookups and the mapping happen under the lock; decoding does not.
            views = [t.locate(j) for j in picked] if t else []
        entries = [decode_entry(topic, v) for v in views]
        if entries:
            entries[0] = sliced(entries[0], offset)
        return entries

    def read_meta(
        self, topic: str, offset: int, max_entries: int = 10_000
    ) -> list[tuple[int, int, bytes]]:
        """Entries' offsets and meta from the headers alone (see ``Log.read_meta``)."""
        check_topic(topic)
        with self._lock:
            self._check_open(reading=True)
            t = self._topics.get(topic)
            if t is None or offset >= t.end or not t.starts:
                return []
            offset = t.skip_gap(offset)
            first = max(bisect_right(t.starts, offset) - 1, 0)
            last = min(len(t.starts), first + max_entries)
            ends = [*t.starts[first + 1 : last + 1], t.end][: last - first]
            views = [
                (t.starts[j], end, t.locate(j))
                for j, end in zip(range(first, last), ends, strict=True)
            ]
        return [(start, end, entry_meta(view)) for start, end, view in views]

    async def wait(self, topic: str, offset: int, timeout_s: float) -> bool:
        """Wait until ``end_offset(topic) > offset``; False on timeout or close."""
        check_topic(topic)
        return await self._waiters.wait(topic, offset, timeout_s)

    def wait_blocking(self, topic: str, offset: int, timeout_s: float) -> bool:
        """``wait`` for threads."""
        check_topic(topic)
        return self._waiters.wait_blocking(topic, offset, timeout_s)

    def end_offset(self, topic: str) -> int:
        """One past the last durable row of ``topic`` (0 if it has none)."""
        with self._lock:
            return self._end_locked(topic)

    def start_offset(self, topic: str) -> int:
        """Oldest readable offset of ``topic``; moves up when ``trim`` deletes segments."""
        with self._lock:
            t = self._topics.get(topic)
            return t.start() if t else 0

    def topics(self) -> list[str]:
        """Topics holding durable entries, sorted."""
        with self._lock:
            return sorted(name for name, t in self._topics.items() if t.end > 0)

    def size_bytes(self) -> int:
        """Bytes of segment files on disk."""
        with self._lock:
            return self._size

    # ------------------------------------------------------------ retention and close

    def trim(self, topic: str, before: int) -> None:
        """Delete whole segments whose rows are all below ``before``; never the last one."""
        with self._lock:
            t = self._topics.get(topic)
            doomed: list[Segment] = []
            # Segment 0's rows all sit below segment 1's base; the last segment stays.
            while t is not None and len(t.segments) > 1 and t.bases[1] <= before:
                doomed.append(t.segments.pop(0))
                t.bases.pop(0)
            if t is None or not doomed:
                return
            keep_from = bisect_left(t.starts, t.bases[0])
            del t.starts[:keep_from], t.positions[:keep_from]
            self._size -= sum(s.written for s in doomed)
            metrics.LOG_SIZE_BYTES.set(self._size)
        # Sealed segments: the writer no longer touches them, readers no longer find them.
        for seg in doomed:
            seg.path.unlink()
        if self.fsync:
            fsync_dir(t.dir)

    async def close(self) -> None:
        """Make pending appends durable, stop the writer and release the directory."""
        await asyncio.to_thread(self.close_blocking)

    def close_blocking(self) -> None:
        """``close`` for threads and synchronous code."""
        with self._lock:
            if self._stopping:
                already = True
            else:
                already, self._stopping = False, True
                self._work.notify()
        self._writer.join()
        if already:
            return
        with self._lock:
            self._closed = True
            self._waiters.close()
            for t in self._topics.values():
                for seg in t.files():
                    seg.mapped = None
                    if seg.fd >= 0:
                        os.close(seg.fd)
                        seg.fd = -1
        os.close(self._lock_fd)

    def _check_open(self, *, reading: bool = False) -> None:
        # After a write failure, durable entries stay readable; appends are refused.
        if self._failure is not None and not reading:
            raise LogClosed(
                f"the log in {self.directory} stopped after a write failure ({self._failure}); "
                "fix the cause (e.g. free disk space) and restart to reopen it"
            )
        if self._closed or (self._stopping and not reading):
            raise LogClosed(f"the log in {self.directory} is closed; open a new FileLog to use it")

    def _end_locked(self, topic: str) -> int:
        t = self._topics.get(topic)
        return t.end if t else 0

    def _recover(self, committed: Mapping[str, Mapping[str, int]]) -> dict[str, Topic]:
        topics, cuts = {}, []
        for path in sorted(self.directory.iterdir()):
            if path.is_dir() and TOPIC_RE.match(path.name):
                topics[path.name], cut = recover_topic(path, committed.get(path.name, {}))
                if cut is not None:
                    cuts.append(cut)
        check_committed(topics, committed)
        # Torn tails are cut only once every topic is known to be sound.
        for cut in cuts:
            cut_tail(cut, self.fsync)
        return topics

    # ------------------------------------------------------------ the writer thread

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._stopping:
                    self._work.wait()
                group, self._queue = self._queue, []
            if not group:
                return  # stopping, and everything queued is durable
            try:
                self._commit(group)
            except BaseException as exc:
                self._fail(group, exc)
                return

    def _commit(self, group: list[Pending]) -> None:
        """Write a group, sync every touched file once, then publish and acknowledge."""
        # One writev per file, not per entry: each system call hands the GIL back and
        # forth with the event loop thread, which costs far more than the call itself.
        touched: dict[int, tuple[Segment, list[bytes | pa.Buffer]]] = {}
        dirs: set[Path] = set()
        placed: list[tuple[Pending, Segment, int]] = []
        for item in group:
            item.parts.insert(0, encode_header(item.offset, item.rows, item.meta_len, item.parts))
            seg = self._segment_for(item, touched, dirs)
            placed.append((item, seg, seg.written))
            seg.written += item.size
            touched.setdefault(id(seg), (seg, []))[1].extend(item.parts)
        for seg, parts in touched.values():
            write_all(seg.fd, parts)
        started = time.perf_counter()
        if self.fsync:
            for seg, _ in touched.values():
                os.fdatasync(seg.fd)
            for d in dirs:
                fsync_dir(d)
            metrics.LOG_FSYNC_SECONDS.observe(time.perf_counter() - started)
        # Counted before the appenders wake up, so an appender sees its append counted.
        metrics.LOG_APPENDS.inc(len(group))
        metrics.LOG_APPEND_BYTES.inc(sum(item.size for item in group))
        metrics.LOG_GROUP_SIZE.observe(len(group))
        self._publish(placed)

    def _segment_for(
        self,
        item: Pending,
        touched: dict[int, tuple[Segment, list[bytes | pa.Buffer]]],
        dirs: set[Path],
    ) -> Segment:
        t = self._topics[item.topic]  # entries are never removed, so no lock is needed
        seg = t.active
        if seg is not None and seg.written > 0 and seg.written + item.size > self.segment_bytes:
            # Roll. The full segment is made durable before its successor exists, so on
            # open only a topic's last segment can ever hold a torn entry.
            if seg.fd >= 0:  # not yet open after a reopen: nothing unsynced in it
                write_all(seg.fd, touched.pop(id(seg), (seg, []))[1])
                if self.fsync:
                    os.fdatasync(seg.fd)
                os.close(seg.fd)
                seg.fd = -1
            seg = None
        if seg is None:
            if not t.dir.exists():
                t.dir.mkdir()
                dirs.add(self.directory)
            seg = Segment(t.dir / f"{item.offset:020d}{SEGMENT_SUFFIX}", item.offset)
            seg.fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            dirs.add(t.dir)
            t.active = seg
        elif seg.fd < 0:
            seg.fd = os.open(seg.path, os.O_WRONLY | os.O_APPEND)
        return seg

    def _publish(self, placed: list[tuple[Pending, Segment, int]]) -> None:
        ends: dict[str, int] = {}
        with self._lock:
            for item, seg, pos in placed:
                t = self._topics[item.topic]
                t.publish(seg, pos, item.offset, item.rows, item.size)
                ends[item.topic] = t.end
                self._size += item.size
            for topic, end in ends.items():
                self._waiters.advanced(topic, end)
            metrics.LOG_SIZE_BYTES.set(self._size)
        _acknowledge([item for item, _, _ in placed])

    def _fail(self, group: list[Pending], exc: BaseException) -> None:
        """Fail-stop: after a write or fsync error nothing written since is trustworthy."""
        log.error("log_writer_failed", directory=str(self.directory), error=repr(exc))
        with self._lock:
            self._failure = exc
            group = group + self._queue
            self._queue = []
            self._waiters.close()
        error = LogClosed(
            f"log write failed in {self.directory}: {exc}; the entry was not acknowledged "
            "and may or may not survive a restart"
        )
        for item in group:
            item.error = error
        _acknowledge(group)


def _acknowledge(items: list[Pending]) -> None:
    """Wake every appender of ``items``: threads directly, event loops once each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Pending]] = {}
    for item in items:
        if item.loop is not None:
            by_loop.setdefault(item.loop, []).append(item)
        elif item.done is not None:
            item.done.set()
    # One wake-up per event loop for the whole group, not one per append.
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, mine)


def _resolve(items: list[Pending]) -> None:
    for item in items:
        fut = item.future
        if fut is None or fut.done():  # a cancelled appender
            continue
        if item.error is not None:
            fut.set_exception(item.error)
        else:
            fut.set_result(item.result())


def lock_directory(directory: Path) -> int:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise HeadwaterError(
            f"the log directory {directory} is in use by another FileLog (maybe another "
            "process); stop it first or use another data directory",
            code="log_in_use",
        ) from None
    return fd
