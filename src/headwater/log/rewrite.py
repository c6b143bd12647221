"""Rewriting entries in place: how an erasure takes a data subject's rows out of the hot log.

The log is append-only in every other way. ``Rewritable.rewrite_blocking(topic, change)``
passes each entry's batch to ``change``, which answers ``None`` (keep the entry as it is)
or a batch of the same length and schema (the same offsets, the same meta). In the file
log each segment holding a changed entry is written again beside the old one, fsynced and
renamed over it, so after a crash a segment is either wholly old or wholly new; the
writer thread runs the rewrite between append groups, so no append races it. Readers
holding a batch of the old file keep reading the old bytes (the old mapping lives on).

>>> t = pa.record_batch({"user": ["a", "b"], "_received_ms": [5, 6]})
>>> redact(t, pa.array([True, False])).to_pydict()
{'user': [None, 'b'], '_received_ms': [-1, 6]}
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from headwater.log.segment import (
    HEADER,
    decode_entry,
    encode_header,
    encode_payload,
    fsync_dir,
    write_all,
)

Change = Callable[[pa.RecordBatch], pa.RecordBatch | None]
REWRITE_SUFFIX = ".rewrite"
ERASED_RECEIVED_MS = -1  # the mark of an erased row: no real row was received before 1970
KEPT_ON_ERASURE = frozenset({"_received_ms", "_schema_version", "_id_hash"})


@runtime_checkable
class Rewritable(Protocol):
    def rewrite_blocking(self, topic: str, change: Change) -> int:
        """Replace the entries ``change`` answers a batch for; return how many changed.

        Blocks until the new entries are durable. Call it from a thread, never from an
        event loop.
        """
        ...


def redact(batch: pa.RecordBatch, mask: pa.Array) -> pa.RecordBatch:
    """``batch`` with the rows ``mask`` picks erased: every field null, the event-id hash and
    schema version kept (a retried event is still known), ``_received_ms`` set to
    ``ERASED_RECEIVED_MS`` so that every reader of the log drops the row."""
    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if name == "_received_ms":
            column = pc.if_else(mask, pa.scalar(ERASED_RECEIVED_MS, column.type), column)
        elif name not in KEPT_ON_ERASURE:
            column = pc.if_else(mask, pa.scalar(None, column.type), column)
        columns.append(column)
    return compact(pa.RecordBatch.from_arrays(columns, schema=batch.schema))


def compact(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` copied, so that a value nulled out leaves no bytes behind: a null slot of
    a string column made by ``if_else`` still covers the old characters in the buffer."""
    return batch.take(pa.array(range(batch.num_rows), pa.int64()))


@dataclass(frozen=True, slots=True)
class Framed:
    """One stored entry: its offset, rows, meta and batch, and its bytes as stored."""

    offset: int
    rows: int
    meta: bytes
    raw: pa.Buffer  # header and payload
    batch: pa.RecordBatch

    @classmethod
    def at(cls, topic: str, view: pa.Buffer) -> Framed:
        """The entry at the start of ``view`` (a segment's bytes from the entry on)."""
        payload_len = HEADER.unpack_from(view.slice(0, HEADER.size))[5]
        entry = decode_entry(topic, view)
        raw = view.slice(0, HEADER.size + payload_len)
        return cls(entry.offset, entry.batch.num_rows, entry.meta, raw, entry.batch)


@dataclass(frozen=True, slots=True)
class Rewritten:
    positions: list[int]  # each entry's new position in the segment
    size: int  # the segment's new size
    changed: int  # entries changed


def rewrite_segment(
    path: Path, entries: list[Framed], change: Change, fsync: bool
) -> Rewritten | None:
    """Write ``path`` again with ``change`` applied; None (nothing touched) if nothing changed."""
    parts: list[bytes | pa.Buffer] = []
    positions: list[int] = []
    changed, size = 0, 0
    for e in entries:
        new = change(e.batch)
        positions.append(size)
        if new is None:
            parts.append(e.raw)
            size += e.raw.size
            continue
        if new.num_rows != e.rows or not new.schema.equals(e.batch.schema):
            raise ValueError("a rewritten entry keeps its number of rows and its schema")
        changed += 1
        payload, length = encode_payload(new, e.meta)
        parts += [encode_header(e.offset, e.rows, len(e.meta), payload), *payload]
        size += HEADER.size + length
    if not changed:
        return None
    temp = path.with_name(path.name + REWRITE_SUFFIX)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_all(fd, parts)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    if fsync:
        fsync_dir(path.parent)
    return Rewritten(positions, size, changed)


def remove_leftovers(directory: Path) -> None:
    """Delete half-written rewrites a crash left behind (the old segments are whole)."""
    for path in directory.glob(f"*{REWRITE_SUFFIX}"):
        path.unlink()


class RewriteJob:
    """A rewrite waiting for the writer thread."""

    def __init__(self, topic: str, change: Change) -> None:
        self.topic, self.change = topic, change
        self.done = threading.Event()
        self.changed = 0
        self.error: BaseException | None = None

    def run(self, rewrite: Callable[[str, Change], int]) -> None:
        try:
            self.changed = rewrite(self.topic, self.change)
        except BaseException as exc:  # handed to the caller, who waits in rewrite_blocking
            self.error = exc
        finally:
            self.done.set()
