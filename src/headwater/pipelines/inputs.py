"""The log topics a pipeline reads: one per input stream (two for a join of streams).

Each input is read from its own committed offset; the offsets of all inputs are
committed together with the pipeline's state and appended rows, in one checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from headwater.log.ports import Log, LogEntry
from headwater.store.ports import ResultStore


@dataclass(frozen=True, slots=True)
class RunnerInput:
    stream: str
    topic: str
    schema: Callable[[], pa.Schema]  # the stream's current schema
    erased: Callable[[list[LogEntry]], pa.Array | None] = lambda _: None  # rows to keep


def read_input(
    log: Log, store: ResultStore, tenant: str, topic: str, offset: int, max_rows: int
) -> tuple[list[LogEntry], int]:
    """The next entries of ``topic`` from ``offset`` on, and the offset that follows them.

    Rows the log no longer holds (retention trims only what the store has) are read
    back from the stream's table, so a pipeline started from the beginning of a
    stream sees all of it, however old.
    """
    start = log.start_offset(topic)
    if offset < start:
        stream = topic[len(tenant) + 1 :]  # the topic is "tenant.stream"
        rows = store.rows_by_offset(tenant, stream, offset, start, max_rows)
        if rows.num_rows:
            offsets = rows.column("_offset")
            stored = rows.drop_columns(["_offset"]).combine_chunks().to_batches()[0]
            first, last = offsets[0].as_py(), offsets[-1].as_py()
            return [LogEntry(topic, first, stored)], last + 1
        offset = start  # nothing stored below the log's start
    entries = log.read(topic, offset, max_rows)
    return entries, entries[-1].end if entries else offset
