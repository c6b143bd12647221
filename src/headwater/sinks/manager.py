"""Sink lifecycle: create, list, status, pause, resume, drop, replay; restart after a restart.

Every sink runs on one event loop in its own thread ("headwater-sinks"), so a slow or
failing destination never holds ingestion, pipelines or the API; the methods here are
called from any thread and hand work to that loop.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import pyarrow as pa
import structlog

from headwater.catalog.sqlite import Catalog, SinkRecord
from headwater.errors import BadRequest, Conflict, NotFound
from headwater.ingest.streams import StreamDirectory, topic_of
from headwater.log.ports import Log, LogEntry
from headwater.model.time import Clock, ms_to_datetime
from headwater.pipelines.runner import output_topic
from headwater.sinks.config import PostgresConfig, parse_sink, sink_config
from headwater.sinks.dlq import DLQ_KEY, DLQ_SCHEMA, dlq_table
from headwater.sinks.kinds import runner_of
from headwater.sinks.outbox import LocalOutboxes, Outboxes
from headwater.sinks.policy import Breaker
from headwater.sinks.report import Reporter, status_of
from headwater.store.ports import ResultStore, ResultWrite, RowQuery

if TYPE_CHECKING:
    pass

log = structlog.get_logger("headwater.sinks")
T = TypeVar("T")
CALL_TIMEOUT_S = 60.0
TRIM_INTERVAL_S = 5.0


@dataclass
class Running:
    runner: Any  # SinkRunner
    stop: asyncio.Event
    task: asyncio.Task[None]


class SinkManager:
    def __init__(
        self,
        catalog: Catalog,
        log_: Log,
        store: ResultStore,
        streams: StreamDirectory,
        clock: Clock,
        followed: set[tuple[str, str]],
        taken: Callable[[str], set[str]],
        erased: Callable[[str, str], Callable[[list[LogEntry]], pa.Array | None]],
        file_root: Path | None = None,
        outboxes: Outboxes | None = None,
    ) -> None:
        self._catalog, self._log, self._store, self._streams = catalog, log_, store, streams
        self._clock = clock
        self._followed = followed  # shared with the pipelines: results go to an output topic
        self._taken = taken
        self._erased = erased  # (tenant, stream) -> keep-mask of a stream's entries
        self._file_root = file_root  # where file sinks (parquet) may write
        # rows encoded and delivered here, or in sink worker processes (``sink_workers``)
        self._outboxes = outboxes if outboxes is not None else LocalOutboxes()
        self._records: dict[tuple[str, str], SinkRecord] = {}
        self._running: dict[tuple[str, str], Running] = {}
        self._breakers: dict[str, Breaker] = {}  # one per PostgreSQL database
        self._failed: dict[tuple[str, str], str] = {}
        self._replay_lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="headwater-sinks", daemon=True
        )
        self.reporter = Reporter()

    # lifecycle --------------------------------------------------------------------
    def start_all(self) -> None:
        self._thread.start()
        self._call(self._report_loop_start())
        for rec in self._catalog.sinks():
            self._records[(rec.tenant, rec.name)] = rec
            if rec.status != "running":
                continue
            try:
                self._start(rec)
            except Exception as exc:  # e.g. its stream or pipeline was dropped: say so, go on
                self._failed[(rec.tenant, rec.name)] = f"cannot start: {exc}"
                log.error("sink_failed", tenant=rec.tenant, sink=rec.name, error=str(exc))

    def stop_all(self) -> None:
        if self._thread.is_alive():
            for key in list(self._running):
                self._stop(key)
            self._call(self._outboxes.close())
            self._call(_cancel_the_rest())  # the reporter and the trimmer
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()

    def create(self, tenant: str, data: Any) -> dict[str, Any]:
        name, kind, source, config = parse_sink(data, self._file_root)
        if (tenant, name) in self._records:
            raise Conflict(f"sink {name!r} already exists", code="sink_exists")
        dlq = dlq_table(name)
        if dlq in self._taken(tenant):
            raise Conflict(f"{dlq!r} (its dead-letter table) is already taken", code="name_taken")
        topic, by_offset = self._topic(tenant, source)
        self._store.ensure_table(tenant, dlq, DLQ_SCHEMA, DLQ_KEY)
        start = 0 if by_offset and config.start == "earliest" else self._log.end_offset(topic)
        state = orjson.dumps({"delivered": 0, "dead": 0})
        self._store.commit(tenant, ResultWrite(f"sink:{name}", {topic: start}, state=state))
        raw = data.get("config", {})
        rec = SinkRecord(tenant, name, kind, source, raw, "running", self._clock.now_ms())
        if not by_offset:
            self._followed.add((tenant, source))
        self._catalog.put_sink(rec)
        self._records[(tenant, name)] = rec
        self._start(rec)
        return self.status(tenant, name)

    def pause(self, tenant: str, name: str) -> dict[str, Any]:
        self._set(self._record(tenant, name), "paused")
        self._stop((tenant, name))
        return self.status(tenant, name)

    def resume(self, tenant: str, name: str) -> dict[str, Any]:
        rec = self._set(self._record(tenant, name), "running")
        if (tenant, name) not in self._running:
            self._start(rec)
        return self.status(tenant, name)

    def drop(self, tenant: str, name: str, drop_tables: bool) -> None:
        rec = self._record(tenant, name)
        self._stop((tenant, name))
        self._catalog.drop_sink(tenant, name)
        del self._records[(tenant, name)]
        self._failed.pop((tenant, name), None)
        if not any(r.tenant == tenant and r.source == rec.source for r in self._records.values()):
            self._followed.discard((tenant, rec.source))
        if drop_tables:
            self._store.drop_table(tenant, dlq_table(name))

    def replay(self, tenant: str, name: str, data: Any) -> dict[str, Any]:
        """Deliver dead letters again: ``{"offsets": [...]}``, ``{"keys": [...]}`` or ``{"all": true}``."""
        self._record(tenant, name)
        running = self._running.get((tenant, name))
        if running is None:
            raise Conflict(f"sink {name!r} is not running: resume it first", code="sink_paused")
        wanted = _selection(data)
        with self._replay_lock:  # two replays never pick the same dead letter
            self._call(running.runner.commit_done())  # dead letters counted are in the table
            letters = [d for d in self._letters(tenant, name, "dead") if wanted(d)]
            if letters:
                self._call(running.runner.mark_replaying(letters))
        self._replay(running, letters)
        return {"name": name, "replaying": len(letters)}

    def _replay(self, running: Running, letters: builtins.list[dict[str, Any]]) -> None:
        if letters:
            self._loop.call_soon_threadsafe(
                lambda: running.runner.track(self._loop.create_task(running.runner.replay(letters)))
            )

    # views ------------------------------------------------------------------------
    def names(self, tenant: str) -> list[str]:
        return sorted(n for t, n in self._records if t == tenant)

    def list(self, tenant: str) -> builtins.list[dict[str, Any]]:
        return [self.status(tenant, n) for n in self.names(tenant)]

    def status(self, tenant: str, name: str) -> dict[str, Any]:
        rec = self._record(tenant, name)
        running = self._running.get((tenant, name))
        out = status_of(rec, running.runner if running else None, self._failed.get((tenant, name)))
        out["created_at"] = ms_to_datetime(rec.created_ms)
        if running is not None:
            out["lag_rows"] = max(
                0, self._log.end_offset(running.runner.topic) - running.runner.offset
            )
        return out

    def consumer_offsets(self) -> builtins.list[tuple[str, int]]:
        """(topic, committed offset) of every running sink: the log keeps what they need."""
        return [(r.runner.topic, r.runner.offset) for r in list(self._running.values())]

    # internals --------------------------------------------------------------------
    def _topic(self, tenant: str, source: str) -> tuple[str, bool]:
        if any(s.schema.name == source for s in self._streams.in_tenant(tenant)):
            return topic_of(tenant, source), True
        if any(p.name == source for p in self._catalog.pipelines(tenant)):
            return output_topic(tenant, source), False
        raise BadRequest(
            f"a sink reads a stream or a pipeline's result table; {source!r} is neither here",
            code="unknown_sink_source",
        )

    def _start(self, rec: SinkRecord) -> None:
        key = (rec.tenant, rec.name)
        topic, by_offset = self._topic(rec.tenant, rec.source)
        if not by_offset:
            self._followed.add((rec.tenant, rec.source))
        self._failed.pop(key, None)
        erased = self._erased(rec.tenant, rec.source) if by_offset else lambda _: None

        def build() -> Any:
            if rec.kind == "postgres":
                return self._postgres_runner(rec, topic, by_offset, erased)
            config = sink_config(rec.kind, rec.config, self._file_root)
            assert not isinstance(config, PostgresConfig)
            return runner_of(rec.tenant, rec.name, config, topic, by_offset, self._log,
                             self._store, erased, self._outboxes)  # fmt: skip

        async def start() -> Running:
            runner = build()
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop), name=f"sink-{rec.name}")
            task.add_done_callback(lambda t: self._ended(key, t))
            return Running(runner, stop, task)

        self._running[key] = self._call(start())
        self.reporter.add(rec.tenant, rec.name, self._running[key].runner)
        self._replay(self._running[key], self._letters(rec.tenant, rec.name, "replaying"))

    def _postgres_runner(
        self, rec: SinkRecord, topic: str, by_offset: bool,
        erased: Callable[[builtins.list[LogEntry]], pa.Array | None],
    ) -> Any:  # fmt: skip
        from headwater.sinks.postgres import PostgresDelivery
        from headwater.sinks.postgres_runner import PostgresSinkRunner

        config = sink_config("postgres", rec.config)
        assert isinstance(config, PostgresConfig)
        breaker = self._breakers.setdefault(
            f"postgres:{config.dsn}", Breaker(config.breaker_failures, config.breaker_open_s)
        )
        delivery = PostgresDelivery(config, breaker)
        return PostgresSinkRunner(rec, topic, by_offset, self._log, self._store, delivery, erased)

    def _ended(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            self._failed[key] = f"{type(exc).__name__}: {exc}"
            log.error("sink_failed", tenant=key[0], sink=key[1], error=self._failed[key])
            self._running.pop(key, None)

    def _stop(self, key: tuple[str, str]) -> None:
        running = self._running.pop(key, None)
        self.reporter.remove(*key)
        if running is None:
            return

        async def stop() -> None:
            running.stop.set()
            await asyncio.wait([running.task], timeout=30)

        self._call(stop())

    def _letters(self, tenant: str, name: str, state: str) -> builtins.list[dict[str, Any]]:
        letters: builtins.list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self._store.read_rows(
                RowQuery(tenant, dlq_table(name), filters={"state": state}, limit=10_000,
                         cursor=cursor)
            )  # fmt: skip
            letters += page.rows.to_pylist()
            cursor = page.next_cursor
            if cursor is None:
                return letters

    def _record(self, tenant: str, name: str) -> SinkRecord:
        rec = self._records.get((tenant, name))
        if rec is None:
            raise NotFound(f"sink {name!r} does not exist", code="unknown_sink")
        return rec

    def _set(self, rec: SinkRecord, status: str) -> SinkRecord:
        self._catalog.set_sink_status(rec.tenant, rec.name, status)
        new = SinkRecord(rec.tenant, rec.name, rec.kind, rec.source, rec.config, status,
                         rec.created_ms)  # fmt: skip
        self._records[(rec.tenant, rec.name)] = new
        return new

    async def _report_loop_start(self) -> None:
        self._loop.create_task(self.reporter.run())
        self._loop.create_task(self._trim_loop())

    async def _trim_loop(self) -> None:
        while True:
            await asyncio.sleep(TRIM_INTERVAL_S)
            try:
                await asyncio.to_thread(self.trim_outputs)
            except Exception:  # retried next time; the log only grows meanwhile
                log.exception("sink_trim_failed")

    def trim_outputs(self) -> None:
        """Let the log drop pipeline output rows every sink following them has committed."""
        lowest: dict[str, int] = {}
        for r in list(self._running.values()):
            if not r.runner.by_offset:
                t = r.runner.topic
                lowest[t] = min(lowest.get(t, r.runner.offset), r.runner.offset)
        for (tenant, name), rec in list(self._records.items()):
            if (tenant, name) not in self._running and not self._is_stream(tenant, rec.source):
                lowest.pop(output_topic(tenant, rec.source), None)  # a paused sink holds it
        for topic, offset in lowest.items():
            if offset > self._log.start_offset(topic):
                self._log.trim(topic, offset)

    def _is_stream(self, tenant: str, source: str) -> bool:
        return any(s.schema.name == source for s in self._streams.in_tenant(tenant))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _selection(data: Any) -> Callable[[dict[str, Any]], bool]:
    """Which dead letters a replay body picks."""
    if isinstance(data, dict) and data.get("all") is True:
        return lambda d: True
    if isinstance(data, dict) and (
        isinstance(data.get("offsets"), list) or isinstance(data.get("keys"), list)
    ):
        offsets, keys = data.get("offsets") or [], data.get("keys") or []
        if (
            isinstance(offsets, list) and isinstance(keys, list)
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and all(isinstance(k, str) for k in keys)
        ):  # fmt: skip
            wanted_offsets, wanted_keys = set(offsets), set(keys)
            return lambda d: d["offset"] in wanted_offsets or d["key"] in wanted_keys
    raise BadRequest(
        'send {"offsets": [1, 2]}, {"keys": ["..."]} or {"all": true}', code="bad_replay"
    )
