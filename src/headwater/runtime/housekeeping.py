"""Chores on an interval: copy idempotency answers to disk, trim the hot log, expire rows.

The hot log is trimmed only below what every reader committed: the materializer, the
answer file, the id runs, and each pipeline and sink (``readers``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

import structlog

from headwater.catalog.sqlite import Catalog
from headwater.ingest.answers import answer_topics, copy_answers
from headwater.ingest.idempotency import IdempotencyKeys
from headwater.ingest.streams import StreamDirectory, quarantine_table_of
from headwater.log.ports import Log
from headwater.log.retention import RetentionClock, trim_point
from headwater.model.time import Clock, parse_duration_ms
from headwater.observability import metrics as m
from headwater.settings import Settings
from headwater.store.materializer import Materializer
from headwater.store.ports import ResultStore

log = structlog.get_logger("headwater")

INTERVAL_S = 30.0
Readers = Callable[[], Iterable[tuple[str, int]]]  # (topic, committed offset) of each reader


class Housekeeping:
    def __init__(
        self, clock: Clock, log_: Log, streams: StreamDirectory, answers: IdempotencyKeys,
        materializer: Materializer, store: ResultStore, catalog: Catalog,
        settings: Settings, readers: Readers,
    ) -> None:  # fmt: skip
        self._clock, self._log, self._streams, self._answers = clock, log_, streams, answers
        self._materializer, self._store, self._catalog = materializer, store, catalog
        self._log_retention_ms = parse_duration_ms(settings.log_retention)
        self._audit_retention_ms = parse_duration_ms(settings.audit_retention)
        self._readers = readers
        self.retention = RetentionClock()
        self._task: asyncio.Task[None] | None = None

    def run(self) -> None:
        """One round of every chore (blocking: call it in a thread from the event loop)."""
        now = self._clock.now_ms()
        copied = copy_answers(self._log, self._streams.all(), self._answers)
        readers: dict[str, list[int]] = {}
        for topic, offset in self._readers():
            readers.setdefault(topic, []).append(offset)
        for st in self._streams.all():
            for topic in answer_topics(st):
                end = self._log.end_offset(topic)
                self.retention.mark(topic, now, end)
                consumers = [
                    end if topic == st.idempotency_topic else self._materializer.committed(topic)
                ]
                consumers += [copied.get(topic, 0), *readers.get(topic, [])]
                if topic == st.topic and st.ids.runs is not None:
                    consumers.append(st.ids.runs.covered)  # ids not yet on disk
                marks = self.retention.marks[topic]
                cut = trim_point(marks, now, self._log_retention_ms, consumers)
                if cut > self._log.start_offset(topic):
                    self._log.trim(topic, cut)
                    self.retention.forget_before(topic, cut)
        self._answers.expire(now)
        self._expire_rows(now)
        self._catalog.forget_audit_before(now - self._audit_retention_ms)

    def _expire_rows(self, now_ms: int) -> None:
        """Delete stored rows (and quarantined ones) received longer ago than their stream's
        ``retention``. Rows still in the hot log stay there until ``log_retention``."""
        for st in self._streams.all():
            if not st.schema.retention:
                continue
            cut = now_ms - parse_duration_ms(st.schema.retention)
            name = st.schema.name
            gone = self._store.delete_before(st.tenant, name, "_received_ms", cut)
            gone += self._store.delete_before(
                st.tenant, quarantine_table_of(name), "received_ms", cut
            )
            if gone:
                m.STORE_ROWS_EXPIRED.labels(st.tenant, name).inc(gone)
                log.info("rows_expired", tenant=st.tenant, stream=name, rows=gone)

    async def start(self, interval_s: float = INTERVAL_S) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._every(interval_s), name="housekeeping")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _every(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.run)
            except Exception:
                log.exception("housekeeping_failed")
