"""A ``postgres`` sink at work: batches from the log, each applied with its progress in
one PostgreSQL transaction (``sinks.postgres``); the same surface as ``SinkRunner`` for
the manager, the status and the metrics.

The target's progress table is the cursor. Headwater's store keeps a copy (offset and
counters, written after each PostgreSQL commit) for the status and for log retention;
a copy behind the truth only means the log keeps a little more.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Callable

import numpy as np
import orjson
import pyarrow as pa
import structlog

from headwater.catalog.sqlite import SinkRecord
from headwater.log.ports import Log, LogEntry
from headwater.sinks.dlq import DLQ_KEY, dlq_table, to_table
from headwater.sinks.postgres import Moved, PostgresDelivery, Refused, Target
from headwater.sinks.runner import Totals, _at_most, _first
from headwater.store.ports import ResultStore, ResultWrite

log = structlog.get_logger("headwater.sinks")


class PostgresSinkRunner:
    """Runs on the sinks' event loop; status reads come from any thread."""

    def __init__(
        self, rec: SinkRecord, topic: str, by_offset: bool, log_: Log, store: ResultStore,
        delivery: PostgresDelivery,
        erased: Callable[[list[LogEntry]], pa.Array | None] = lambda _: None,
    ) -> None:  # fmt: skip
        self.tenant, self.name, self.topic = rec.tenant, rec.name, topic
        self.consumer = f"sink:{rec.name}"
        self.by_offset = by_offset
        self._log, self._store, self.outbox = log_, store, delivery
        self._erased = erased
        self.config = delivery.config
        self.sink_id = f"{rec.tenant}/{rec.name}/{rec.created_ms}"
        self.table = self.config.table or rec.source
        self.offset = 0
        self.committed = Totals()
        self.totals = Totals()
        self.error: str | None = None
        self.read_error: str | None = None
        self.blocked = False
        self._lock = threading.Lock()
        self._since: float | None = None  # when the rows pending now were read
        self._target: Target | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        cfg = self.config
        delay = cfg.backoff_base_s
        try:
            while not stop.is_set():
                try:
                    if self._target is None:
                        await asyncio.to_thread(self._connect)
                    await self._once(stop)
                    self.error, delay = None, cfg.backoff_base_s
                except Exception as exc:  # the target is down or refuses: the same batch again
                    self._failed(exc)
                    await _first(stop.wait(), timeout=random.uniform(0, delay))  # full jitter
                    delay = min(cfg.backoff_max_s, delay * 2)
        finally:
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._target is not None:
                self._target.close()

    def _connect(self) -> None:
        """Connect, and take the cursor and counters from the target's progress table."""
        first = self._store.consumer_offsets(self.tenant, self.consumer).get(self.topic, 0)
        target = Target(self.config, self.table, self.sink_id)
        try:
            offset, delivered, dead = target.restore(self.topic, first)
        except BaseException:
            target.close()
            raise
        with self._lock:
            self._target, self.offset = target, offset
            self.committed = Totals(delivered + dead, delivered, dead)
            self.totals = Totals(**vars(self.committed))
            self._since = None

    def _failed(self, exc: Exception) -> None:
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("sink_postgres_failed", sink=self.name, error=self.error)
        d = self.outbox
        d.stats.failed += 1
        d.breaker.on_failure(time.monotonic())
        if self._target is not None:
            self._target.close()
            self._target = None  # reconnect, and read the progress again
        with self._lock:
            self.totals = Totals(**vars(self.committed))  # what was read comes again
            self._since = None

    async def _once(self, stop: asyncio.Event) -> None:
        entries = await self._gather(stop)
        if not entries:
            return
        start, end = self.offset, entries[-1].end
        rows, offsets = self._rows(entries)
        with self._lock:
            self.totals.produced += rows.num_rows
            self._since = self._since or time.monotonic()
        target = self._target
        assert target is not None
        d = self.outbox
        d.stats.attempts += 1
        t0 = time.monotonic()
        try:
            refused = await asyncio.to_thread(
                target.write, rows, start, end,
                lambda r: self._dead_letters(rows, offsets, r),
            )  # fmt: skip
        except Moved:  # applied already (a commit whose answer was lost): read it again
            target.close()
            self._target = None
            await asyncio.to_thread(self._connect)
            return
        d.stats.latency_s += time.monotonic() - t0
        d.breaker.on_success()
        c = self.committed
        after = Totals(c.produced + rows.num_rows, c.delivered + rows.num_rows - len(refused),
                       c.dead + len(refused))  # fmt: skip
        with self._lock:
            self.offset, self.committed = end, after
            self.totals = Totals(**vars(after))
            self._since = None
        state = orjson.dumps({"delivered": after.delivered, "dead": after.dead})
        await asyncio.to_thread(self._store.commit, self.tenant,
                                ResultWrite(self.consumer, {self.topic: end}, state=state))  # fmt: skip

    async def _gather(self, stop: asyncio.Event) -> list[LogEntry]:
        """Rows from the cursor on; waits up to ``batch_age_ms`` to fill a batch."""
        cfg, offset = self.config, self.offset
        entries = await asyncio.to_thread(self._log.read, self.topic, offset, cfg.batch_rows)
        if not entries:
            await self._log.wait(self.topic, offset, 0.2)
            return []
        deadline = time.monotonic() + cfg.batch_age_ms / 1000
        n = sum(e.batch.num_rows for e in entries)
        while n < cfg.batch_rows and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            end = entries[-1].end
            if await self._log.wait(self.topic, end, min(left, 0.2)):
                more = await asyncio.to_thread(self._log.read, self.topic, end, cfg.batch_rows - n)
                entries += more
                n += sum(e.batch.num_rows for e in more)
        return _at_most(entries, cfg.batch_rows)

    def _rows(self, entries: list[LogEntry]) -> tuple[pa.Table, np.ndarray]:
        """The entries' rows without internal columns (nor erased subjects), and offsets."""
        table = pa.Table.from_batches([e.batch for e in entries])
        offsets = np.concatenate([np.arange(e.offset, e.end) for e in entries])
        keep = self._erased(entries)
        if keep is not None:
            table = table.filter(keep)
            offsets = offsets[np.asarray(keep.to_numpy(zero_copy_only=False), dtype=bool)]
        table = table.select([n for n in table.column_names if not n.startswith("_")])
        return table, offsets

    def _dead_letters(self, rows: pa.Table, offsets: np.ndarray, refused: list[Refused]) -> None:
        """Store refused rows in ``<sink>_dlq`` (before the commit that passes them)."""
        now = int(time.time() * 1000)
        letters = []
        for i, error in refused:
            text = orjson.dumps(rows.slice(i, 1).to_pylist()[0], default=str)
            key = (f"{self.name}-{int(offsets[i])}" if self.by_offset
                   else f"{self.name}-{hashlib.sha256(text).hexdigest()[:32]}")  # fmt: skip
            letters.append({
                "key": key, "offset": int(offsets[i]), "row": text.decode(), "attempts": 1,
                "last_status": None, "last_body": "", "error": error, "first_failure": now,
                "last_failure": now, "state": "dead",
            })  # fmt: skip
        upserts = {dlq_table(self.name): (to_table(letters), DLQ_KEY)}
        self._store.commit(self.tenant, ResultWrite(self.consumer, {}, upserts=upserts))

    # what the manager calls ----------------------------------------------------------
    async def commit_done(self) -> None:
        return None  # each batch is committed as it is applied

    def track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def mark_replaying(self, letters: list[dict[str, object]]) -> None:
        marked = [{**d, "state": "replaying"} for d in letters]
        upserts = {dlq_table(self.name): (to_table(marked), DLQ_KEY)}
        await asyncio.to_thread(self._store.commit, self.tenant,
                                ResultWrite(self.consumer, {}, upserts=upserts))  # fmt: skip

    async def replay(self, letters: list[dict[str, object]]) -> None:
        """Upsert dead letters again (after the table was fixed); those applied become
        ``replayed`` and count as delivered, in the progress row too."""
        rows = pa.Table.from_pylist([orjson.loads(str(d["row"])) for d in letters])
        target = Target(self.config, self.table, self.sink_id)
        try:
            refused = dict(await asyncio.to_thread(target.replay, rows))
        finally:
            target.close()
        out = [
            {**d, "state": "dead", "error": refused[i], "attempts": int(str(d["attempts"])) + 1}
            if i in refused else {**d, "state": "replayed"}
            for i, d in enumerate(letters)
        ]  # fmt: skip
        ok = len(letters) - len(refused)
        upserts = {dlq_table(self.name): (to_table(out), DLQ_KEY)}
        await asyncio.to_thread(self._store.commit, self.tenant,
                                ResultWrite(self.consumer, {}, upserts=upserts))  # fmt: skip
        with self._lock:
            c = self.committed
            self.committed = Totals(c.produced, c.delivered + ok, c.dead - ok)
            self.totals = Totals(self.totals.produced, self.totals.delivered + ok,
                                 self.totals.dead - ok)  # fmt: skip

    def snapshot(self) -> tuple[Totals, float]:
        with self._lock:
            totals = Totals(**vars(self.totals))
            since = self._since
        return totals, (time.monotonic() - since) if since is not None else 0.0
