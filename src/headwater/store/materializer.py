"""Copies each stream's log entries into its store table, exactly once.

One background thread walks every stream; each commit appends rows and advances the
consumer offset in the same store transaction, so a crash at any instant neither
loses nor repeats rows. Readers that need read-after-write wait on ``caught_up``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from itertools import pairwise

import numpy as np
import pyarrow as pa
import structlog
from prometheus_client import Gauge

from headwater.log.ports import Log, LogEntry
from headwater.observability import metrics as m
from headwater.observability.tracing import span
from headwater.store.ports import ResultStore, ResultWrite
from headwater.store.tombstones import Tombstones

log = structlog.get_logger("headwater.materializer")


def conform(entries: list[LogEntry], schema: pa.Schema) -> pa.Table:
    """Entries → one table of ``schema``: ``_offset`` added, missing columns null, types cast.

    Consecutive entries with the same schema are converted together, so a read of
    many small entries (single-event requests) costs a few Arrow calls, not a few per entry.
    """
    runs: list[list[LogEntry]] = []
    for e in entries:
        if runs and e.batch.schema.equals(runs[-1][0].batch.schema, check_metadata=True):
            runs[-1].append(e)
        else:
            runs.append([e])
    tables = [_conform_run(run, schema) for run in runs]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _conform_run(run: list[LogEntry], schema: pa.Schema) -> pa.Table:
    table = pa.Table.from_batches([e.batch for e in run])
    names = set(table.schema.names)
    cols = []
    for f in schema:
        if f.name == "_offset":
            cols.append(_offsets(run))
        elif f.name in names:
            col = table.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _offsets(run: list[LogEntry]) -> pa.Array:
    if all(a.end == b.offset for a, b in pairwise(run)):
        return pa.array(np.arange(run[0].offset, run[-1].end, dtype=np.int64))
    return pa.array(np.concatenate([np.arange(e.offset, e.end, dtype=np.int64) for e in run]))


Updates = dict[str, tuple[pa.Table, list[str]]]
Shape = Callable[[list[LogEntry], pa.Table], tuple[pa.Table, Updates]]
"""Entries and their conformed rows → the rows to append and the updates (``ResultWrite``)
to commit with them."""


def append_all(entries: list[LogEntry], rows: pa.Table) -> tuple[pa.Table, Updates]:
    return rows, {}


class Feed:
    """One topic copied into one table; ``shape`` may turn some entries into updates."""

    def __init__(
        self,
        tenant: str,
        topic: str,
        table: str,
        schema: Callable[[], pa.Schema],
        shape: Shape = append_all,
        subject: str | None = None,
    ) -> None:
        self.tenant, self.topic, self.table, self.schema = tenant, topic, table, schema
        self.shape = shape
        self.subject = subject  # the field erasures name, on stream tables
        self.consumer = f"materialize:{table}"
        self.offset: int | None = None
        self.last_commit = 0.0
        self._lag: Gauge | None = None

    @property
    def lag_gauge(self) -> Gauge:
        if self._lag is None:
            self._lag = m.LOG_CONSUMER_LAG_ROWS.labels(self.consumer, self.topic)
        return self._lag


class Materializer:
    def __init__(
        self,
        log_: Log,
        store: ResultStore,
        batch_rows: int,
        feeds: Callable[[], Iterable[Feed]],
        tombstones: Tombstones | None = None,
    ) -> None:
        self._tombstones = tombstones or Tombstones()
        self._log = log_
        self._store = store
        self._batch_rows = batch_rows
        self._feeds = feeds
        self._known: dict[str, Feed] = {}
        self._stop = threading.Event()
        self._nudge = threading.Event()  # a reader waits: look now, and commit what is there
        self._wanted: dict[str, int] = {}  # topic -> readers waiting on ``caught_up``
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        # Each store commit has a fixed cost (a transaction, the consumer offset, a WAL
        # sync) and holds the store's writer: with nobody waiting, gather rows this long.
        self.gather_s = 0.5
        self.poll_s = 0.02

    def committed(self, topic: str) -> int:
        feed = self._known.get(topic)
        if feed is None or feed.offset is None:
            return 0
        return feed.offset

    def lag(self, topic: str) -> int:
        return max(0, self._log.end_offset(topic) - self.committed(topic))

    async def caught_up(self, topic: str, target: int, timeout_s: float = 5.0) -> bool:
        """Wait until rows below ``target`` are in the store (read-after-write)."""
        if self.committed(topic) >= target:
            return True
        deadline = time.monotonic() + timeout_s
        self._wanted[topic] = self._wanted.get(topic, 0) + 1
        self._nudge.set()
        try:
            while self.committed(topic) < target:
                if time.monotonic() > deadline:
                    return False
                await asyncio.sleep(0.003)
            return True
        finally:
            left = self._wanted.pop(topic, 1) - 1
            if left > 0:
                self._wanted[topic] = left

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="headwater-materializer", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._nudge.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                moved = self.run_once()
                self.error = None
                backoff = 0.0
            except Exception as exc:  # keep going: the next pass retries from the committed offset
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("materializer_failed", error=self.error)
                backoff = min(5.0, backoff * 2 or 0.1)
                self._stop.wait(backoff)
                continue
            if not moved:
                self._nudge.wait(self.poll_s)
                self._nudge.clear()

    def run_once(self) -> int:
        """Copy one batch of every feed that has new entries; return rows copied."""
        moved = 0
        for feed in self._feeds():
            feed = self._known.setdefault(feed.topic, feed)
            if feed.offset is None:
                feed.offset = self._store.consumer_offsets(feed.tenant, feed.consumer).get(
                    feed.topic, 0
                )
                feed.offset = max(feed.offset, self._log.start_offset(feed.topic))
            pending = self._log.end_offset(feed.topic) - feed.offset
            if pending <= 0:
                feed.lag_gauge.set(0)
                continue
            # Small commits cost the store more than rows do: gather rows for a while,
            # unless a reader is waiting for them.
            waited = time.monotonic() - feed.last_commit
            if (
                pending < self._batch_rows // 4
                and waited < self.gather_s
                and feed.topic not in self._wanted
            ):
                continue
            entries = self._log.read(feed.topic, feed.offset, self._batch_rows)
            if not entries:
                continue
            rows, updates = feed.shape(entries, conform(entries, feed.schema()))
            rows = self._tombstones.filter(feed.tenant, feed.table, feed.subject, rows)
            end = entries[-1].end
            with span("store.commit", table=feed.table, rows=rows.num_rows):
                self._store.commit(
                    feed.tenant,
                    ResultWrite(
                        consumer=feed.consumer,
                        offsets={feed.topic: end},
                        appends={feed.table: rows} if rows.num_rows else {},
                        updates=updates,
                    ),
                )
            feed.offset = end
            feed.last_commit = time.monotonic()
            moved += rows.num_rows
            feed.lag_gauge.set(self._log.end_offset(feed.topic) - end)
        return moved
