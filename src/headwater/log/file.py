"""``FileLog``: the embedded durable log — append-only segment files, group-committed.

The file format, segments and recovery live in ``headwater.log.segment``.

One writer thread commits appends in groups: it writes everything pending, fdatasyncs
each file it touched once, and only then publishes the entries to readers and resolves
the appenders. A crash loses only unacknowledged entries. A full disk fails the appends
in flight (503, nothing half-written stays behind) and refuses new ones until space is
free again; then the log takes appends again by itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import structlog

from headwater.log.disk import Disk, OsDisk, lock_directory
from headwater.log.ports import (
    TOPIC_RE,
    AppendResult,
    LogClosed,
    LogEntry,
    LogFull,
    check_topic,
)
from headwater.log.reading import EndWaiters, entry_range, sliced
from headwater.log.recovery import check_committed, cut_tail, recover_topic
from headwater.log.rewrite import Change, Framed, RewriteJob, remove_leftovers, rewrite_segment
from headwater.log.segment import (
    HEADER,
    Segment,
    Topic,
    decode_entry,
    encode_payload,
    entry_meta,
    fsync_dir,
)
from headwater.log.writer import (
    OUT_OF_SPACE,
    Files,
    Pending,
    Undo,
    acknowledge,
    roll_back,
    write_group,
)
from headwater.observability import metrics

log = structlog.get_logger("headwater.log")

ROOM_POLL_S = 1.0  # while the disk is full: how often to look for free space
ROOM_MIN_BYTES = 1024 * 1024  # free space wanted before taking appends again


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
        disk: Disk | None = None,
    ) -> None:
        """Open (and recover) the log in ``directory``.

        ``committed`` maps topics to the offsets their consumers committed (consumer name
        -> offset): the log refuses to open (``LogCorrupted``) if a topic ends below one,
        so an offset a consumer has read past is never handed out again. ``disk`` writes
        the segment files (``OsDisk`` by default).
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
        self._jobs: list[RewriteJob] = []  # rewrites, run by the writer thread between groups
        self._stopping = False
        self._closed = False
        self._failure: BaseException | None = None
        self._full: LogFull | None = None  # out of disk space: appends wait for room
        try:
            self._topics = self._recover(committed or {})
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._files = Files(self.directory, self._topics, disk or OsDisk(), fsync, segment_bytes)
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

    def wait_any_blocking(self, positions: Mapping[str, int], timeout_s: float) -> bool:
        """``wait_blocking`` on several topics: True once any passes its offset."""
        return self._waiters.wait_any_blocking(positions, timeout_s)

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

    def rewrite_blocking(self, topic: str, change: Change) -> int:
        """Replace the entries ``change`` answers a batch for (see ``headwater.log.rewrite``)."""
        check_topic(topic)
        job = RewriteJob(topic, change)
        with self._lock:
            self._check_open()
            self._jobs.append(job)
            self._work.notify()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.changed

    def _rewrite(self, topic: str, change: Change) -> int:
        """On the writer thread: no append runs, so every written byte is published."""
        with self._lock:
            t = self._topics.get(topic)
            if t is None:
                return 0
            per_segment: dict[int, list[int]] = {}
            for j, start in enumerate(t.starts):
                per_segment.setdefault(bisect_right(t.bases, start) - 1, []).append(j)
            views = {k: [(j, t.locate(j)) for j in js] for k, js in per_segment.items()}
            segments = list(t.segments)
        changed = 0
        for k, found in views.items():
            seg = segments[k]
            entries = [Framed.at(topic, view) for _, view in found]
            done = rewrite_segment(seg.path, entries, change, self.fsync)
            if done is None:
                continue
            if seg.fd >= 0:  # the active segment: the next append opens the new file
                self._files.disk.close(seg.fd)
                seg.fd = -1
            with self._lock:
                for (j, _), pos in zip(found, done.positions, strict=True):
                    t.positions[j] = pos
                self._size += done.size - seg.written
                seg.written = seg.published = done.size
                seg.mapped = None
                metrics.LOG_SIZE_BYTES.set(self._size)
            changed += done.changed
        return changed

    async def close(self) -> None:
        """Make pending appends durable, stop the writer and release the directory.

        The close runs on a thread of its own: a caller cancelled while it waits stops
        waiting, and the close still happens (``asyncio.to_thread`` would drop it if
        cancelled before a pool thread took it, leaving the directory locked)."""
        closing = threading.Thread(target=self.close_blocking, name="headwater-log-close")
        closing.start()
        await asyncio.to_thread(closing.join)

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

    @property
    def healthy(self) -> bool:
        """False while appends are refused: the disk is full, or a write failed."""
        return self._failure is None and self._full is None

    def _check_open(self, *, reading: bool = False) -> None:
        if self._full is not None and not reading:
            metrics.LOG_DISK_FULL.inc()
            raise LogFull(self._full.message, retry_after_s=ROOM_POLL_S)
        # After a write failure, durable entries stay readable; appends are refused.
        if self._failure is not None and not reading:
            raise LogClosed(
                f"the log in {self.directory} stopped after a write failure ({self._failure}); "
                "fix the cause (a failing disk) and restart to reopen it"
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
                remove_leftovers(path)
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
                while not self._queue and not self._jobs and not self._stopping:
                    self._work.wait()
                group, self._queue = self._queue, []
                jobs, self._jobs = self._jobs, []
            for job in jobs:
                job.run(self._rewrite)
            if not group and jobs:
                continue
            if not group:
                return  # stopping, and everything queued is durable
            try:
                self._commit(group)
            except OSError as exc:
                if exc.errno not in OUT_OF_SPACE:
                    self._fail(group, exc)
                    return
                self._out_of_space(group, exc)
                if not self._wait_for_room(max(ROOM_MIN_BYTES, sum(i.size for i in group))):
                    return  # stopping
            except BaseException as exc:
                self._fail(group, exc)
                return

    def _commit(self, group: list[Pending]) -> None:
        """Write a group, sync every touched file once, then publish and acknowledge."""
        undo = Undo()
        try:
            placed = write_group(self._files, group, undo)
        except OSError as exc:
            if exc.errno in OUT_OF_SPACE:
                try:
                    roll_back(self._files, undo)
                except BaseException as failed:  # the files are in doubt: stop for good
                    raise RuntimeError(f"undoing a write after {exc} failed: {failed}") from exc
            raise
        # Counted before the appenders wake up, so an appender sees its append counted.
        metrics.LOG_APPENDS.inc(len(group))
        metrics.LOG_APPEND_BYTES.inc(sum(item.size for item in group))
        metrics.LOG_GROUP_SIZE.observe(len(group))
        self._publish(placed)

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
        acknowledge([item for item, _, _ in placed])

    def _out_of_space(self, group: list[Pending], exc: OSError) -> None:
        """Refuse the group and everything queued behind it; their offsets are free again."""
        log.warning("log_disk_full", directory=str(self.directory), error=str(exc))
        error = LogFull(
            f"the disk holding the log {self.directory} is full ({exc.strerror}): the events "
            "were not stored. Retry later; the log takes appends again by itself once space "
            "is free",
            retry_after_s=ROOM_POLL_S,
        )
        with self._lock:
            self._full = error
            group = group + self._queue
            self._queue = []
            for t in self._topics.values():
                t.next = t.end  # nothing past the durable end was acknowledged
        metrics.LOG_DISK_FULL.inc(len(group))
        for item in group:
            item.error = error
        acknowledge(group)

    def _wait_for_room(self, size: int) -> bool:
        """Block the writer until ``size`` bytes fit on the disk again; False if stopping."""
        with self._lock:
            while not self._stopping:
                self._work.wait(ROOM_POLL_S)
                if self._files.disk.has_room(self.directory, size):
                    self._full = None
                    log.info("log_disk_room_again", directory=str(self.directory))
                    return True
        return False

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
        acknowledge(group)
