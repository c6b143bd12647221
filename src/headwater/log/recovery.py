"""Opening a log directory: rebuild each topic's index, and tell a crash from damage.

A crash (``kill -9``, a power cut) can leave exactly one thing behind: an incomplete
final entry in a topic's last segment — the file ends inside it, or in zeros — with
nothing intact after it. That torn tail was never acknowledged, so it is cut off.
Anything else is damage a crash cannot explain: a complete entry failing its checksum,
damage with intact entries after it, damage in an older segment, a missing segment, or a
topic that ends below an offset a consumer has already committed. Then the log refuses
to open and says which file, byte and offset are hit and what is at stake; nothing is
changed on disk. ``headwater log verify`` lists every damaged spot and
``headwater log repair`` cuts them out (see ``headwater.log.damage``).

A repair that cuts rows out leaves a gap marker ``<from>-<to>.gap`` in the topic's
directory: offsets in that range are gone, and reads skip over them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from headwater.log.ports import LogCorrupted
from headwater.log.segment import (
    SEGMENT_SUFFIX,
    Segment,
    Topic,
    check_entry,
    frame_at,
    is_torn_tail,
    next_intact,
)

log = structlog.get_logger("headwater.log")

GAP_SUFFIX = ".gap"
REPAIR_HINT = (
    "Nothing was changed on disk. Run `headwater log verify --data-dir <dir>` to list every "
    "damaged spot; restore the file from a backup, or run `headwater log repair --data-dir "
    "<dir>` to cut the damage out (it keeps a copy and prints exactly what is lost)"
)


@dataclass(frozen=True, slots=True)
class Cut:
    """A torn tail to cut off once every topic is known to be sound."""

    path: Path
    position: int


def gap_name(start: int, stop: int) -> str:
    return f"{start:020d}-{stop:020d}{GAP_SUFFIX}"


def topic_files(directory: Path) -> list[tuple[int, Path]]:
    """Segment files and gap markers of a topic, by the offset they start at."""
    found = []
    for p in directory.iterdir():
        if p.suffix == SEGMENT_SUFFIX and p.stem.isdigit():
            found.append((int(p.stem), 1, p))
        elif p.suffix == GAP_SUFFIX and _gap_of(p) is not None:
            found.append((int(p.stem.split("-")[0]), 0, p))
    return [(start, p) for start, _, p in sorted(found)]


def _gap_of(path: Path) -> tuple[int, int] | None:
    start, _, stop = path.stem.partition("-")
    return (int(start), int(stop)) if start.isdigit() and stop.isdigit() else None


def recover_topic(directory: Path, committed: Mapping[str, int]) -> tuple[Topic, Cut | None]:
    """Rebuild a topic's index; return it and the torn tail to cut, if there is one.

    ``committed`` maps each consumer of the topic to the offset it committed.
    """
    topic = Topic(directory)
    files = topic_files(directory)
    segments = [p for _, p in files if p.suffix == SEGMENT_SUFFIX]
    cut = None
    for start, path in files:
        gap = _gap_of(path) if path.suffix == GAP_SUFFIX else None
        if gap is not None:  # topic_files lists only gap markers whose name parses
            stop = gap[1]
            if topic.active is not None:  # a gap before every retained segment is history
                _expect(topic, path, start)
                topic.gaps.append((start, stop))
                topic.end = stop
            continue
        if topic.active is not None:
            _expect(topic, path, start)
        seg = Segment(path, start)
        topic.end = seg.base
        cut = _scan(topic, seg, last=path == segments[-1], committed=committed)
        topic.active = seg
    topic.next = topic.end
    return topic, cut


def _expect(topic: Topic, path: Path, start: int) -> None:
    if start != topic.end:
        raise LogCorrupted(
            f"log file {path} starts at offset {start} but the topic's previous segment ends at "
            f"offset {topic.end}: a segment file is missing or was renamed. {REPAIR_HINT}.",
            path=str(path),
            offset=topic.end,
        )


def _scan(topic: Topic, seg: Segment, *, last: bool, committed: Mapping[str, int]) -> Cut | None:
    with open(seg.path, "rb") as fh:
        data = memoryview(fh.read())  # readinto a bytes buffer: one pass, no mmap cleanup
    pos = 0
    cut = None
    while pos < len(data):
        checked = check_entry(data, pos, topic.end)
        if isinstance(checked, str):
            if not (last and is_torn_tail(data, pos, checked)):
                raise LogCorrupted(
                    damage_message(seg.path, data, pos, topic.end, checked, committed, last),
                    path=str(seg.path),
                    position=pos,
                    offset=topic.end,
                )
            log.warning("log_torn_tail", path=str(seg.path), position=pos, reason=checked)
            cut = Cut(seg.path, pos)
            break
        rows, size = checked
        topic.publish(seg, pos, topic.end, rows, size)
        pos += size
    seg.written = seg.published = pos
    if pos == 0 and not last:
        raise LogCorrupted(
            f"log segment {seg.path} is empty but is not the last of its topic (log offsets "
            f"from {seg.base} on are missing). {REPAIR_HINT}.",
            path=str(seg.path),
            offset=seg.base,
        )
    return cut


def damage_message(
    path: Path,
    data: memoryview,
    pos: int,
    offset: int,
    reason: str,
    committed: Mapping[str, int],
    last: bool,
) -> str:
    """What is damaged, where, and what rides on it."""
    entries, rows = intact_after(data, pos)
    after = (
        f"{entries} intact entries ({rows} rows) follow it in this file"
        if entries
        else "no intact entry follows it in this file"
    )
    if not last:
        after += ", and later segment files follow"
    return (
        f"log segment {path} is damaged at byte {pos} (log offset {offset}): {reason}. A crash "
        f"cannot explain this, so the server will not start. At stake: the entry at offset "
        f"{offset}; {after}. {consumers_at(committed, offset)} {REPAIR_HINT}."
    )


def consumers_at(committed: Mapping[str, int], offset: int) -> str:
    """Which consumers already read past ``offset`` and which still need the rows there."""
    past = sorted(f"{c} (at {o})" for c, o in committed.items() if o > offset)
    waiting = sorted(c for c, o in committed.items() if o <= offset)
    parts = []
    if past:
        parts.append("Already read past it: " + ", ".join(past) + ".")
    if waiting:
        parts.append("Not yet read by: " + ", ".join(waiting) + ".")
    return " ".join(parts) or "No consumer has committed an offset in this topic."


def intact_after(data: memoryview, pos: int) -> tuple[int, int]:
    """(entries, rows) of intact entries after the damage at ``pos``."""
    entries = rows = 0
    at = next_intact(data, pos)
    while at is not None:
        framed = frame_at(data, at)
        if isinstance(framed, str):
            at = next_intact(data, at)
            continue
        entries, rows = entries + 1, rows + framed[1]
        at += framed[2]
        if at >= len(data):
            break
    return entries, rows


def check_committed(
    topics: Mapping[str, Topic], committed: Mapping[str, Mapping[str, int]]
) -> None:
    """Refuse a log that ends below an offset a consumer committed: offsets would be reused."""
    for name, consumers in sorted(committed.items()):
        t = topics.get(name)
        end = t.end if t is not None else 0
        ahead = {c: o for c, o in consumers.items() if o > end}
        if ahead:
            names = ", ".join(f"{c} (at {o})" for c, o in sorted(ahead.items()))
            raise LogCorrupted(
                f"log topic {name} ends at offset {end}, but {names} already committed past "
                f"it: acknowledged rows {end}..{max(ahead.values()) - 1} are missing from the "
                "log (a segment file truncated, deleted or restored from an older backup?). "
                "Starting would hand out offsets those consumers have read past, and new "
                f"events there would never be stored. {REPAIR_HINT}.",
                topic=name,
                offset=end,
            )


def cut_tail(cut: Cut, sync: bool) -> None:
    fd = os.open(cut.path, os.O_WRONLY)
    try:
        os.ftruncate(fd, cut.position)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
