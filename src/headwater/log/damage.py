"""Verifying and repairing a damaged log directory (``headwater log verify`` / ``repair``).

``inspect_topic`` walks every file of a topic and finds each damaged spot: bytes that do
not frame an intact entry, and offsets that are missing. Between spots lie blocks of
intact entries. ``repair_topic`` keeps every intact block, cuts the damage out and
leaves a gap marker where offsets were lost, so reads skip them. Offsets are never
re-based downwards: the topic's end after a repair is at least the highest offset any
consumer committed, so no offset a consumer has read past is handed out again. Every
file it changes is first copied to a backup directory.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headwater.log.ports import TOPIC_RE
from headwater.log.recovery import GAP_SUFFIX, gap_name, topic_files
from headwater.log.segment import SEGMENT_SUFFIX, frame_at, fsync_dir, is_torn_tail, next_intact


@dataclass(frozen=True, slots=True)
class Spot:
    """One damaged place: the offsets from ``offset`` up to ``resumes`` are unreadable."""

    path: Path
    position: int  # byte in the file
    offset: int  # the first offset affected
    resumes: int | None  # offset of the next intact entry, None if nothing follows
    reason: str
    torn: bool = False  # an incomplete final entry: what a crash leaves, never acknowledged


@dataclass(slots=True)
class Block:
    """Intact entries, contiguous in one file and in offsets."""

    path: Path
    start: int  # byte
    stop: int  # byte
    first: int  # offset
    end: int  # offset
    entries: int = 0


@dataclass(slots=True)
class TopicReport:
    topic: str
    directory: Path
    committed: Mapping[str, int]
    blocks: list[Block] = field(default_factory=list)
    spots: list[Spot] = field(default_factory=list)
    end: int = 0  # where the next append goes once the damage is cut out

    def behind(self) -> dict[str, int]:
        """Consumers that committed past the intact end of the topic."""
        return {c: o for c, o in self.committed.items() if o > self.end}

    @property
    def sound(self) -> bool:
        return not self.spots and not self.behind()


def inspect_log(log_dir: Path, committed: Mapping[str, Mapping[str, int]]) -> list[TopicReport]:
    """A report for every topic on disk or with committed offsets."""
    names = {p.name for p in log_dir.iterdir() if p.is_dir() and TOPIC_RE.match(p.name)}
    names |= set(committed)
    return [inspect_topic(log_dir / n, committed.get(n, {})) for n in sorted(names)]


def inspect_topic(directory: Path, committed: Mapping[str, int]) -> TopicReport:
    report = TopicReport(directory.name, directory, committed)
    files = topic_files(directory) if directory.is_dir() else []
    segments = [p for _, p in files if p.suffix == SEGMENT_SUFFIX]
    expected: int | None = None
    for start, path in files:
        if path.suffix == GAP_SUFFIX:
            if expected is not None and start == expected:
                expected = int(path.stem.split("-")[1])  # a gap a repair left: not damage
            continue
        with open(path, "rb") as fh:
            data = memoryview(fh.read())
        expected = _walk(report, path, data, start if expected is None else expected,
                         last=path == segments[-1])  # fmt: skip
    report.end = expected or 0
    return report


def _walk(report: TopicReport, path: Path, data: memoryview, expected: int, *, last: bool) -> int:
    pos, block = 0, None
    while pos < len(data):
        framed = frame_at(data, pos)
        if not isinstance(framed, str) and framed[0] >= expected:
            offset, rows, size = framed
            if offset > expected:  # intact, but offsets before it are missing
                report.spots.append(Spot(path, pos, expected, offset, "offsets missing"))
                block = None
            if block is None:
                block = Block(path, pos, pos, offset, offset)
                report.blocks.append(block)
            block.stop, block.end, block.entries = pos + size, offset + rows, block.entries + 1
            pos, expected = pos + size, offset + rows
            continue
        reason = framed if isinstance(framed, str) else f"entry repeats offset {framed[0]}"
        nxt = next_intact(data, pos)
        if nxt is None:
            torn = last and isinstance(framed, str) and is_torn_tail(data, pos, reason)
            report.spots.append(Spot(path, pos, expected, None, reason, torn))
            break
        resumes = _offset_at(data, nxt)
        report.spots.append(Spot(path, pos, expected, resumes, reason))
        block = None
        pos, expected = nxt, max(expected, resumes)
    return expected


def _offset_at(data: memoryview, pos: int) -> int:
    framed = frame_at(data, pos)
    assert not isinstance(framed, str), "next_intact found an intact entry here"
    return framed[0]


# ---------------------------------------------------------------- repair


@dataclass(frozen=True, slots=True)
class Loss:
    """Offsets a repair cut out of a topic, and who had read them already."""

    topic: str
    start: int
    stop: int | None  # None: to the end of what was written
    reason: str
    read_by: tuple[str, ...]  # consumers that had committed past it: their outputs hold it
    unread_by: tuple[str, ...]  # consumers that never saw it


def repair_topic(report: TopicReport, backup: Path, sync: bool = True) -> list[Loss]:
    """Cut every damaged spot out of the topic; return what was lost."""
    if report.sound:
        return []
    changed = {s.path for s in report.spots} | {b.path for b in report.blocks if b.start > 0}
    keep: dict[Path, int] = {b.path: b.stop for b in report.blocks if b.start == 0}
    (backup / report.topic).mkdir(parents=True, exist_ok=True)
    report.directory.mkdir(parents=True, exist_ok=True)
    for path in sorted(changed):
        shutil.copy2(path, backup / report.topic / path.name)
    for block in report.blocks:
        if block.start > 0:
            _copy_block(block, report.directory / f"{block.first:020d}{SEGMENT_SUFFIX}", sync)
    for path in sorted(changed):
        if path in keep:
            os.truncate(path, keep[path])
        else:
            path.unlink()
    ends = [b.end for b in report.blocks]
    firsts = [b.first for b in report.blocks[1:]]
    for end, first in zip(ends, firsts, strict=False):
        if first > end:
            _write_gap(report.directory, end, first, sync)
    floor = max(report.committed.values(), default=0)
    if floor > report.end:
        _write_gap(report.directory, report.end, floor, sync)
        (report.directory / f"{floor:020d}{SEGMENT_SUFFIX}").touch()
    if sync:
        fsync_dir(report.directory)
    return losses(report)


def losses(report: TopicReport) -> list[Loss]:
    out = []
    for spot in report.spots:
        read_by = tuple(sorted(c for c, o in report.committed.items() if o > spot.offset))
        unread = tuple(sorted(c for c, o in report.committed.items() if o <= spot.offset))
        out.append(Loss(report.topic, spot.offset, spot.resumes, spot.reason, read_by, unread))
    if not report.spots and report.behind():  # the log ends early without visible damage
        out.append(
            Loss(report.topic, report.end, max(report.committed.values()), "log ends early",
                 tuple(sorted(report.behind())), ())
        )  # fmt: skip
    return out


def _copy_block(block: Block, target: Path, sync: bool) -> None:
    if target.exists() and target != block.path:
        raise FileExistsError(f"cannot move intact entries to {target}: the file exists")
    with open(block.path, "rb") as src:
        src.seek(block.start)
        data = src.read(block.stop - block.start)
    with open(target, "wb") as out:
        out.write(data)
        out.flush()
        if sync:
            os.fsync(out.fileno())


def _write_gap(directory: Path, start: int, stop: int, sync: bool) -> None:
    with open(directory / gap_name(start, stop), "w") as fh:
        fh.write(f"offsets {start} to {stop - 1} were cut out by `headwater log repair`\n")
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
