"""The on-disk format of the embedded log: entry framing, segment files, recovery.

Layout: ``<directory>/<topic>/<base offset, 20 digits>.log``. Each segment holds entries
framed as::

    magic "HWL1" | crc32 u32 | offset u64 | rows u32 | meta_len u32 | payload_len u64
    payload = meta | zero pad to 8 | Arrow IPC stream (one batch) | zero pad to 8

Integers are little-endian; ``crc32`` covers the payload, then the header bytes after
it (offset .. payload_len). Entries start and end 8-byte aligned, so Arrow buffers read
back from a memory map are aligned and used without copying. Recovery on open lives in
``headwater.log.recovery``; ``headwater.log.damage`` verifies and repairs a damaged log.
"""

from __future__ import annotations

import os
import struct
import zlib
from array import array
from bisect import bisect_right
from pathlib import Path

import pyarrow as pa

from headwater.log.ports import LogEntry

MAGIC = b"HWL1"
HEADER = struct.Struct("<4sIQIIQ")  # magic, crc32, offset, rows, meta_len, payload_len
_CRC_FROM = 8  # the crc covers the header from the offset field on
_PAD = bytes(8)
SEGMENT_SUFFIX = ".log"
_IOV_MAX = os.sysconf("SC_IOV_MAX")
# Built once: without options, every writer reads two environment variables to pick them.
_IPC_OPTIONS = pa.ipc.IpcWriteOptions()


def _pad8(n: int) -> int:
    return -n % 8


# ---------------------------------------------------------------- entry framing


def encode_payload(batch: pa.RecordBatch, meta: bytes) -> tuple[list[bytes | pa.Buffer], int]:
    """Serialize ``batch`` and ``meta``; return (payload parts, payload length)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_IPC_OPTIONS) as writer:
        writer.write_batch(batch)
    body = sink.getvalue()
    parts: list[bytes | pa.Buffer] = [meta + _PAD[: _pad8(len(meta))], body]
    if pad := _pad8(body.size):
        parts.append(_PAD[:pad])
    return parts, sum(len(p) if isinstance(p, bytes) else p.size for p in parts)


def encode_header(offset: int, rows: int, meta_len: int, payload: list[bytes | pa.Buffer]) -> bytes:
    """The header of an entry, with the checksum of ``payload`` and of the header fields."""
    crc = 0
    for part in payload:
        crc = zlib.crc32(part, crc)
    payload_len = sum(len(p) if isinstance(p, bytes) else p.size for p in payload)
    fields = HEADER.pack(MAGIC, 0, offset, rows, meta_len, payload_len)[_CRC_FROM:]
    return MAGIC + struct.pack("<I", zlib.crc32(fields, crc)) + fields


def entry_meta(buf: pa.Buffer) -> bytes:
    """The meta of the entry at the start of ``buf``, leaving its rows undecoded."""
    meta_len = HEADER.unpack_from(buf.slice(0, HEADER.size))[4]
    return bytes(buf.slice(HEADER.size, meta_len).to_pybytes())


def decode_entry(topic: str, buf: pa.Buffer) -> LogEntry:
    """Decode the entry at the start of ``buf``; the batch shares ``buf``'s memory."""
    _, _, offset, _, meta_len, payload_len = HEADER.unpack_from(buf.slice(0, HEADER.size))
    meta = buf.slice(HEADER.size, meta_len).to_pybytes()
    body_at = HEADER.size + meta_len + _pad8(meta_len)
    body = buf.slice(body_at, HEADER.size + payload_len - body_at)
    return LogEntry(topic, offset, pa.ipc.open_stream(body).read_next_batch(), meta)


def frame_at(data: memoryview, pos: int) -> tuple[int, int, int] | str:
    """The entry framed at ``data[pos:]`` if it is intact: (offset, rows, size), else what
    is wrong with it. Its offset is not compared with anything."""
    if len(data) - pos < HEADER.size:
        return "truncated header"
    magic, crc, offset, rows, meta_len, payload_len = HEADER.unpack_from(data, pos)
    if magic != MAGIC:
        return "bad magic"
    end = pos + HEADER.size + payload_len
    if end > len(data):
        return "truncated entry"
    if meta_len > payload_len:
        return "meta longer than the payload"
    fields = data[pos + _CRC_FROM : pos + HEADER.size]
    if zlib.crc32(fields, zlib.crc32(data[pos + HEADER.size : end])) != crc:
        return "checksum mismatch"
    if rows == 0:
        return "entry with no rows"
    return offset, rows, HEADER.size + payload_len


def check_entry(data: memoryview, pos: int, expected_offset: int) -> tuple[int, int] | str:
    """Validate the entry framed at ``data[pos:]``: (rows, size), or what is wrong with it."""
    framed = frame_at(data, pos)
    if isinstance(framed, str):
        return framed
    offset, rows, size = framed
    if offset != expected_offset:
        return f"entry offset {offset} where offset {expected_offset} was expected"
    return rows, size


def next_intact(data: memoryview, pos: int) -> int | None:
    """Position of the first intact entry after ``pos`` (entries start 8-byte aligned)."""
    raw = data.obj if isinstance(data.obj, bytes) else bytes(data)
    at = pos + 1
    while (at := raw.find(MAGIC, at)) >= 0:
        if at % 8 == 0 and not isinstance(frame_at(data, at), str):
            return at
        at += 1
    return None


def is_torn_tail(data: memoryview, pos: int, reason: str) -> bool:
    """Whether the damage at ``pos`` of a topic's last segment is what a crash leaves.

    Only an incomplete final entry is: one the file ends inside of (its length field
    intact), or a zero-filled tail, with no intact entry after it. A complete entry
    failing its checksum, or damage followed by intact entries, is corruption: those
    entries were written whole and may have been acknowledged.
    """
    if next_intact(data, pos) is not None:
        return False
    if not any(data[pos:]):
        return True
    if reason == "truncated header":
        return True
    return reason == "truncated entry" and not _whole_but_length_damaged(data, pos)


def _whole_but_length_damaged(data: memoryview, pos: int) -> bool:
    """An entry reaching exactly to the end of the file whose length field alone is off."""
    _, crc, offset, rows, meta_len, _ = HEADER.unpack_from(data, pos)
    payload_len = len(data) - pos - HEADER.size
    fields = HEADER.pack(MAGIC, 0, offset, rows, meta_len, payload_len)[_CRC_FROM:]
    return bool(zlib.crc32(fields, zlib.crc32(data[pos + HEADER.size :])) == crc)


# ---------------------------------------------------------------- segments and topics


class Segment:
    """One segment file: written by the writer thread, read through a memory map."""

    __slots__ = ("base", "fd", "mapped", "path", "published", "written")

    def __init__(self, path: Path, base: int) -> None:
        self.path = path
        self.base = base
        self.fd = -1  # open for writing while this is its topic's active segment
        self.written = 0  # bytes written (writer thread only)
        self.published = 0  # bytes readers may see (under the log lock)
        self.mapped: pa.Buffer | None = None

    def view(self, pos: int) -> pa.Buffer:
        """The published bytes from ``pos`` on, zero-copy. Call with the log lock held."""
        if self.mapped is None or self.mapped.size < self.published:
            # The active segment grows: map it again. The old map lives on in any
            # batch still using it; closing the file keeps the mapping.
            with pa.memory_map(str(self.path)) as mm:
                self.mapped = mm.read_buffer()
        return self.mapped.slice(pos, self.published - pos)


class Topic:
    """Index of one topic: entry start offsets and file positions, ascending."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.segments: list[Segment] = []  # published segments, oldest first
        self.bases: list[int] = []  # their base offsets, for bisect
        self.starts = array("q")  # start offset of every published entry
        self.positions = array("q")  # its position in its segment
        self.end = 0  # one past the last published row
        self.next = 0  # offset the next append gets (assigned, maybe not yet durable)
        self.active: Segment | None = None  # the segment the writer appends to
        self.gaps: list[tuple[int, int]] = []  # offset ranges a repair cut out, ascending

    def start(self) -> int:
        return self.bases[0] if self.bases else self.end

    def skip_gap(self, offset: int) -> int:
        """``offset``, or the end of the repaired-away range it falls in."""
        for start, stop in self.gaps:
            if start <= offset < stop:
                return stop
        return offset

    def files(self) -> list[Segment]:
        """Every segment on disk: the published ones and the one being written."""
        if self.active is None or self.active in self.segments[-1:]:
            return self.segments
        return [*self.segments, self.active]

    def publish(self, seg: Segment, pos: int, offset: int, rows: int, size: int) -> None:
        if not self.segments or self.segments[-1] is not seg:
            self.segments.append(seg)
            self.bases.append(seg.base)
        self.starts.append(offset)
        self.positions.append(pos)
        self.end = offset + rows
        seg.published = pos + size

    def locate(self, j: int) -> pa.Buffer:
        """Bytes of entry ``j`` (and after). Lock held."""
        seg = self.segments[bisect_right(self.bases, self.starts[j]) - 1]
        return seg.view(self.positions[j])


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new or removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, parts: list[bytes | pa.Buffer]) -> None:
    """Write ``parts`` in as few system calls as the kernel allows."""
    for i in range(0, len(parts), _IOV_MAX):
        chunk = parts[i : i + _IOV_MAX]
        done = os.writev(fd, chunk)
        if done < sum(len(p) if isinstance(p, bytes) else p.size for p in chunk):
            rest = memoryview(b"".join(chunk))[done:]  # a short write: rare, so copying is fine
            while rest:
                rest = rest[os.write(fd, rest) :]
