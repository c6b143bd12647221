"""The file log's group commit: write a group of appends, sync once, or undo it all.

``write_group`` puts each pending append in its topic's active segment (rolling to a new
one at the size limit), writes each touched file with one call, and syncs each once.
When the disk is full it raises after ``roll_back`` has cut every touched file back to
what was durable before the group, so the log can take appends again once space is
free, with no half-written entry and no hole in the offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from headwater.log.disk import Disk
from headwater.log.ports import AppendResult
from headwater.log.segment import SEGMENT_SUFFIX, Segment, Topic, encode_header
from headwater.observability import metrics

OUT_OF_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


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


@dataclass(frozen=True, slots=True)
class Files:
    """What the writer needs to know about the log's files."""

    directory: Path
    topics: dict[str, Topic]
    disk: Disk
    fsync: bool
    segment_bytes: int


@dataclass(slots=True)
class Undo:
    """How to put the files back as they were before a group."""

    sizes: dict[int, tuple[Segment, int]] = field(default_factory=dict)  # durable size
    created: list[Segment] = field(default_factory=list)
    active: dict[str, Segment | None] = field(default_factory=dict)  # topic -> before


Placed = list[tuple[Pending, Segment, int]]


def write_group(files: Files, group: list[Pending], undo: Undo) -> Placed:
    """Write and sync ``group``; return where each entry went. Nothing is published."""
    # One writev per file, not per entry: each system call hands the GIL back and
    # forth with the event loop thread, which costs far more than the call itself.
    touched: dict[int, tuple[Segment, list[bytes | pa.Buffer]]] = {}
    dirs: set[Path] = set()
    placed: Placed = []
    for item in group:
        item.parts.insert(0, encode_header(item.offset, item.rows, item.meta_len, item.parts))
        seg = _segment_for(files, item, touched, dirs, undo)
        undo.sizes.setdefault(id(seg), (seg, seg.written))
        placed.append((item, seg, seg.written))
        seg.written += item.size
        touched.setdefault(id(seg), (seg, []))[1].extend(item.parts)
    for seg, parts in touched.values():
        files.disk.write(seg.fd, parts)
    started = time.perf_counter()
    if files.fsync:
        for seg, _ in touched.values():
            files.disk.sync(seg.fd)
        for d in dirs:
            files.disk.sync_dir(d)
        metrics.LOG_FSYNC_SECONDS.observe(time.perf_counter() - started)
    return placed


def _segment_for(
    files: Files,
    item: Pending,
    touched: dict[int, tuple[Segment, list[bytes | pa.Buffer]]],
    dirs: set[Path],
    undo: Undo,
) -> Segment:
    t = files.topics[item.topic]  # entries are never removed, so no lock is needed
    seg = t.active
    if seg is not None and seg.written > 0 and seg.written + item.size > files.segment_bytes:
        # Roll. The full segment is made durable before its successor exists, so on
        # open only a topic's last segment can ever hold a torn entry.
        if seg.fd >= 0:  # not yet open after a reopen: nothing unsynced in it
            files.disk.write(seg.fd, touched.pop(id(seg), (seg, []))[1])
            if files.fsync:
                files.disk.sync(seg.fd)
            files.disk.close(seg.fd)
            seg.fd = -1
        seg = None
    if seg is None:
        if not t.dir.exists():
            t.dir.mkdir()
            dirs.add(files.directory)
        undo.active.setdefault(item.topic, t.active)
        seg = Segment(t.dir / f"{item.offset:020d}{SEGMENT_SUFFIX}", item.offset)
        seg.fd = files.disk.create(seg.path)
        undo.created.append(seg)
        dirs.add(t.dir)
        t.active = seg
    elif seg.fd < 0:
        seg.fd = files.disk.reopen(seg.path)
    return seg


def roll_back(files: Files, undo: Undo) -> None:
    """Cut every file the failed group touched back to its durable size."""
    created = {id(s) for s in undo.created}
    for seg in undo.created:
        if seg.fd >= 0:
            files.disk.close(seg.fd)
            seg.fd = -1
        seg.path.unlink(missing_ok=True)
    for seg, size in undo.sizes.values():
        if id(seg) in created:
            continue
        fd = seg.fd if seg.fd >= 0 else files.disk.reopen(seg.path)
        try:
            files.disk.truncate(fd, size)
        finally:
            if seg.fd < 0:
                files.disk.close(fd)
        seg.written = size
    for topic, active in undo.active.items():
        files.topics[topic].active = active
    for d in {s.path.parent for s in undo.created}:
        files.disk.sync_dir(d)


def acknowledge(items: list[Pending]) -> None:
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
