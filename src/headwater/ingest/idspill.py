"""Moving event ids from memory to disk: a background thread writes each stream's id runs.

When a stream's oldest hot generation of ids has settled, the spiller reads the ``_id_hash``
column of the stream's log entries from where its runs end (``covered``) to the log's end,
writes them as a sorted run, and lets the index drop that generation. It reads the log,
not memory, so only ids of entries that really are in the log reach the disk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import numpy as np
import structlog

from headwater.ingest.dedup import IdIndex
from headwater.ingest.streams import StreamState
from headwater.log.ports import Log

log = structlog.get_logger("headwater.ingest")

READ_ROWS = 1_000_000


def spill(index: IdIndex, topic: str, source: Log) -> bool:
    """Write the ids the index may drop; False when nothing was due."""
    due = index.spill_due()
    if due is None or index.runs is None:
        return False
    runs = index.runs
    end = max(source.end_offset(topic), due)
    parts, offset = [], runs.covered
    while offset < end and (entries := source.read(topic, offset, READ_ROWS)):
        if entries[0].offset > offset:
            log.error("id_spill_gap", topic=topic, expected=offset, found=entries[0].offset)
        for e in entries:
            if e.offset >= end:
                break
            column = e.batch.column("_id_hash").slice(0, end - e.offset).drop_null()
            parts.append(column.to_numpy())
        offset = entries[-1].end
    hashes = np.sort(np.concatenate(parts)) if parts else np.empty(0, np.uint64)
    if hashes.size > 1:  # unique by sorting: numpy's hash-based unique is slower here
        hashes = hashes[np.r_[True, hashes[1:] != hashes[:-1]]]
    if index.filter is not None:
        index.filter.flush()  # the bits of every id in the run are on disk before it is named
    runs.add(hashes.astype(np.uint64, copy=False), covered=end)
    index.spilled(end)
    return True


def replay_tail(index: IdIndex, topic: str, source: Log) -> None:
    """Remember the ids of log entries past what the runs cover (a start)."""
    covered = index.runs.covered if index.runs is not None else 0
    offset = max(source.start_offset(topic), covered)
    while entries := source.read(topic, offset, READ_ROWS):
        for e in entries:
            index.add(e.batch.column("_id_hash").drop_null().to_numpy(), e.end)
        offset = entries[-1].end


class IdSpiller:
    """One thread spilling the id indexes of every stream that has an id field."""

    def __init__(
        self, source: Log, streams: Callable[[], Iterable[StreamState]], interval_s: float = 0.2
    ) -> None:
        self._log = source
        self._streams = streams
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="id-spiller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def run_once(self) -> None:
        for st in list(self._streams()):
            if st.schema.id is not None:
                while spill(st.ids, st.topic, self._log):
                    pass

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.run_once()
                self.error = None
            except Exception as exc:  # keep going: the next pass retries
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("id_spill_failed", error=self.error)
