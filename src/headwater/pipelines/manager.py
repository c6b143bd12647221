"""Pipeline lifecycle: create, replace, list, status, pause, resume, drop; restart after a restart."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pyarrow as pa
import structlog

from headwater.catalog.quotas import TenantQuotas
from headwater.catalog.sqlite import Catalog, PipelineRecord
from headwater.engine import Pipeline, plan_pipeline
from headwater.engine.evolve import carry_state, dropped_state, split_or_replace, split_reset
from headwater.engine.plan import Plan
from headwater.engine.sql.text import split_statement
from headwater.errors import BadRequest, Conflict, NotFound
from headwater.ingest.streams import StreamDirectory, StreamState
from headwater.ingest.tables import TableNames
from headwater.log.ports import Log, LogEntry
from headwater.model.names import check_free
from headwater.model.schema import arrow_schema
from headwater.model.time import Clock, ms_to_datetime, parse_duration_ms
from headwater.pipelines.inputs import RunnerInput
from headwater.pipelines.models import ModelRegistry, TenantModels
from headwater.pipelines.references import StoreReferenceTables
from headwater.pipelines.runner import (
    Engine,
    PipelineRunner,
    RunnerConfig,
    errors_table,
    late_table,
)
from headwater.pipelines.scheduler import Scheduler
from headwater.pipelines.subscriptions import Subscriptions
from headwater.pipelines.workers import EngineSpec, RemotePipeline, WorkerPool
from headwater.settings import Settings
from headwater.store.materializer import conform
from headwater.store.ports import ResultStore, ResultWrite
from headwater.store.tombstones import Tombstones

log = structlog.get_logger("headwater.pipelines")


class PipelineManager:
    def __init__(
        self, settings: Settings, catalog: Catalog, log_: Log, store: ResultStore,
        streams: StreamDirectory, clock: Clock, tombstones: Tombstones, quotas: TenantQuotas,
        tables: TableNames, models: ModelRegistry,
    ) -> None:  # fmt: skip
        self._settings, self._catalog, self._log, self._store = settings, catalog, log_, store
        self._streams, self._clock, self._tombstones = streams, clock, tombstones
        self._quotas, self._tables = quotas, tables
        self.subs = Subscriptions()
        self._runners: dict[tuple[str, str], PipelineRunner] = {}
        self._records: dict[tuple[str, str], PipelineRecord] = {}
        self._refs: dict[str, StoreReferenceTables] = {}
        # (tenant, pipeline) whose results a sink follows: they go to an output topic too
        self.followed: set[tuple[str, str]] = {(r.tenant, r.source) for r in catalog.sinks()}
        self.models = models
        self._pins: dict[tuple[str, str], dict[str, int]] = {}  # model versions, by pipeline
        self._config = RunnerConfig(checkpoint_interval_s=settings.checkpoint_interval_s)
        self._scheduler = Scheduler(
            log_, settings.pipeline_threads, settings.pipeline_commit_threads
        )
        # the operators run in worker processes, or here (``pipeline_workers = 0``)
        n = settings.pipeline_workers
        self.workers = WorkerPool(n, settings.udf_modules) if n else None

    # lifecycle --------------------------------------------------------------------
    def start_all(self) -> None:
        if self.workers is not None:
            self.workers.start()
        records = list(self._catalog.pipelines())
        for rec in records:  # known before any is built: one may read another
            self._records[(rec.tenant, rec.name)] = rec
        for rec in records:
            try:
                pins = self._catalog.pipeline_models(rec.tenant, rec.name)
                runner = self._build(rec.tenant, rec.sql, pins)
            except Exception as exc:
                self._fail(rec.tenant, rec.name, f"cannot rebuild: {exc}")
                self._records[(rec.tenant, rec.name)] = rec
                continue
            self._runners[(rec.tenant, rec.name)] = runner
            self._records[(rec.tenant, rec.name)] = rec
            if rec.status == "running":
                runner.start(self._scheduler)

    def stop_all(self) -> None:
        for runner in self._runners.values():
            runner.stop()
        self._scheduler.close()
        if self.workers is not None:
            self.workers.close()
        self.subs.close()

    def create(self, tenant: str, sql: str) -> dict[str, Any]:
        sql, or_replace = split_or_replace(sql)
        name = split_statement(sql).name
        if or_replace and (tenant, name) in self._runners:
            return self.replace(tenant, name, sql)
        sql, _ = split_reset(sql)  # a new pipeline has no state to reset
        runner = self._build(tenant, sql)
        name = runner.name
        check_free("pipeline", name, self._tables.occupied(tenant) | self.reserved_names(tenant))
        self._quotas.check_count(tenant, "pipelines", len(self.names(tenant)))
        self._ensure_tables(tenant, runner)
        if runner.pipeline.plan.options.start == "latest":
            offsets = {t: self._log.end_offset(t) for t in runner.topics}
            self._store.commit(tenant, ResultWrite(consumer=runner.consumer, offsets=offsets))
        rec = PipelineRecord(tenant, name, sql, "running", None, self._clock.now_ms())
        self._catalog.set_pipeline_models(tenant, name, self._pins.get((tenant, name), {}))
        self._catalog.put_pipeline(rec)
        self._records[(tenant, name)] = rec
        self._runners[(tenant, name)] = runner
        runner.start(self._scheduler)
        return self.status(tenant, name)

    def replace(self, tenant: str, name: str, sql: str, reset: bool = False) -> dict[str, Any]:
        """Replace a pipeline's SQL. The new SQL is checked first, so a mistake leaves the
        old pipeline running. When the state still means the same (``dropped_state``),
        the new pipeline takes over the old one's state, offsets and tables; otherwise
        409 says what would be dropped, and ``WITH (reset_state = true)`` drops the old
        pipeline with its state and tables and starts over from the stream's start (or
        its ``WITH (start = ...)``).
        """
        sql, asked = split_reset(split_or_replace(sql)[0])
        reset = reset or asked
        old = self._runner(tenant, name)
        new = self._build(tenant, sql)
        if new.name != name:
            raise BadRequest(
                f"the SQL creates pipeline {new.name!r}, but this replaces {name!r}: "
                f"write CREATE PIPELINE {name} AS ..., or create {new.name!r} with POST /v1/pipelines",
                code="pipeline_name_mismatch",
            )
        if not reset:
            dropped = dropped_state(old.pipeline.plan, new.pipeline.plan)
            if not dropped:
                return self._take_over(tenant, old, new, sql)
            raise Conflict(
                f"replacing pipeline {name!r} would drop its state: {'; '.join(dropped)} "
                "change. Add WITH (reset_state = true) to start it over from the stream's "
                "start, with empty results",
                code="state_would_be_dropped", dropped=dropped,
            )  # fmt: skip
        self.drop(tenant, name, drop_tables=True)
        return self.create(tenant, sql)

    def _take_over(
        self, tenant: str, old: PipelineRunner, new: PipelineRunner, sql: str
    ) -> dict[str, Any]:
        """``new`` in ``old``'s place with its state, offsets and tables (evolved)."""
        name, running = old.name, old.running
        old.stop()  # its last checkpoint is written (a failed one's is its last good one)
        try:
            self._ensure_tables(tenant, new)  # a new output column is added
        except Exception:
            if running:
                old.start(self._scheduler)
            raise
        state = self._store.consumer_state(tenant, old.consumer)
        if state:
            carried = carry_state(state, new.pipeline.plan.sql)
            write = ResultWrite(consumer=new.consumer, offsets={}, state=carried)
            self._store.commit(tenant, write)
        rec = self._records[(tenant, name)]
        paused = rec.status == "paused"  # a failed one runs again, under the new SQL
        status = "paused" if paused else "running"
        rec = PipelineRecord(tenant, name, sql, status, None, rec.created_ms)
        self._catalog.set_pipeline_models(tenant, name, self._pins.get((tenant, name), {}))
        self._catalog.put_pipeline(rec)
        self._records[(tenant, name)] = rec
        self._runners[(tenant, name)] = new
        old.release()
        if not paused:
            new.start(self._scheduler)
        return self.status(tenant, name)

    def pause(self, tenant: str, name: str) -> dict[str, Any]:
        runner = self._runner(tenant, name)
        runner.stop()
        self._set(tenant, name, "paused", None)
        return self.status(tenant, name)

    def resume(self, tenant: str, name: str) -> dict[str, Any]:
        runner = self._runner(tenant, name)
        self._set(tenant, name, "running", None)
        runner.start(self._scheduler)
        return self.status(tenant, name)

    def drop(self, tenant: str, name: str, drop_tables: bool) -> None:
        runner = self._runner(tenant, name)
        readers = [r.name for (t, _), r in self._runners.items()
                   if t == tenant and r.name != name and name in reads(r.pipeline.plan)]  # fmt: skip
        if readers:
            raise Conflict(
                f"pipeline {name!r} is read by {', '.join(sorted(readers))} (FROM {name}); "
                "drop those first", code="pipeline_in_use",
            )  # fmt: skip
        runner.stop()
        runner.release()
        self._catalog.drop_pipeline(tenant, name)
        self._catalog.set_pipeline_models(tenant, name, {})
        self._runners.pop((tenant, name), None)
        self._records.pop((tenant, name), None)
        if drop_tables:
            for table in (name, late_table(name), errors_table(name)):
                self._store.drop_table(tenant, table)
            offsets = dict.fromkeys(runner.topics, 0)
            self._store.commit(
                tenant, ResultWrite(consumer=runner.consumer, offsets=offsets, state=b"")
            )

    # views ------------------------------------------------------------------------
    def consumer_offsets(self) -> list[tuple[str, int]]:
        """(topic, committed offset) of every pipeline, paused or failed ones included."""
        return [(t, r.offsets[t]) for r in self._runners.values() for t in r.topics]

    def readers_of(self, tenant: str, topic: str) -> list[tuple[list[str], int]]:
        """For each pipeline of ``tenant`` reading ``topic``: its tables and committed offset."""
        return [
            ([r.name, late_table(r.name), errors_table(r.name)], r.offsets[topic])
            for (t, _), r in list(self._runners.items())
            if t == tenant and topic in r.topics
        ]

    def names(self, tenant: str) -> list[str]:
        return sorted(n for t, n in self._records if t == tenant)

    def reserved_names(self, tenant: str) -> set[str]:
        out: set[str] = set()
        for n in self.names(tenant):
            out |= {n, late_table(n), errors_table(n)}
        return out

    def time_column(self, tenant: str, table: str) -> str | None:
        for n in self.names(tenant):
            runner = self._runners.get((tenant, n))
            if runner is None:
                continue
            if table == n:
                names = runner.pipeline.output_schema.names
                if "window_start" in names:
                    return "window_start"
                tc = runner.pipeline.plan.time_column
                return tc if tc in names else None
            if table in (late_table(n), errors_table(n)):
                return runner.pipeline.plan.time_column
        return None

    def status(self, tenant: str, name: str) -> dict[str, Any]:
        rec = self._records.get((tenant, name))
        if rec is None:
            raise NotFound(f"pipeline {name!r} does not exist", code="unknown_pipeline")
        runner = self._runners.get((tenant, name))
        out: dict[str, Any] = {
            "name": name, "sql": rec.sql, "status": rec.status, "reason": rec.reason,
            "output_table": name, "late_table": late_table(name), "errors_table": errors_table(name),
            "created_at": ms_to_datetime(rec.created_ms),
        }  # fmt: skip
        if runner is None:
            return out
        st = runner.engine.status()
        wm = st.get("watermark_ms")
        c = runner.counters
        plan = runner.pipeline.plan
        lat = sorted(c.batch_ms)
        out.update(
            source=plan.source, inputs=list(plan.inputs), kind=plan.kind, emit=plan.options.emit,
            operators=[{"node": n.name, "kind": n.op.kind.value} for n in runner.pipeline.graph.nodes],
            output_key=list(runner.pipeline.output_key),
            watermark=ms_to_datetime(wm) if wm is not None else None,
            watermark_ms=wm,
            committed_offset=runner.offset, committed_offsets=dict(runner.offsets),
            metrics={
                "rows_in": c.rows_in, "rows_out": c.rows_out, "late_rows": c.late_rows,
                "error_rows": c.error_rows, "commits": c.commits,
                "log_lag_rows": runner.log_lag(),
                "event_time_lag_s": (self._clock.now_ms() - wm) / 1000 if wm is not None else None,
                "state_keys": st.get("state_rows", 0), "state_bytes": st.get("state_bytes", 0),
                "batch_ms_p50": lat[len(lat) // 2] if lat else None,
                "batch_ms_p99": lat[int(len(lat) * 0.99)] if lat else None,
            },
            windows={k: _jsonable(v) for k, v in st.items() if k not in ("watermark_ms",)},
        )  # fmt: skip
        out["waiting"] = _waiting(st, plan.options.allowed_lateness_ms)
        engine = runner.engine
        out["worker_pid"] = engine.pid if isinstance(engine, RemotePipeline) else None
        if runner.error and rec.status != "failed":
            out["status"], out["reason"] = "failed", runner.error
        return out

    def list(self, tenant: str) -> list[dict[str, Any]]:
        return [self.status(tenant, n) for n in self.names(tenant)]

    # reference tables -------------------------------------------------------------
    def references(self, tenant: str) -> StoreReferenceTables:
        refs = self._refs.get(tenant)
        if refs is None:
            refs = StoreReferenceTables(
                self._store, tenant, set(self._catalog.reference_tables(tenant))
            )
            self._refs[tenant] = refs
        return refs

    def reference_added(self, tenant: str, name: str) -> None:
        self.references(tenant).add(name)

    # internals --------------------------------------------------------------------
    def _build(self, tenant: str, sql: str, pins: dict[str, int] | None = None) -> PipelineRunner:
        streams = [s.schema.name for s in self._streams.in_tenant(tenant)]
        # ``FROM <pipeline>`` reads that pipeline's query, computed again in this one
        pipelines = {n: r.sql for (t, n), r in self._records.items() if t == tenant}
        plan = plan_pipeline(sql, streams=streams, pipelines=pipelines)
        if plan.options.idle_timeout_ms is None and self._settings.idle_timeout:
            idle = parse_duration_ms(self._settings.idle_timeout)
            plan = replace(plan, options=replace(plan.options, idle_timeout_ms=idle))
        states = [self._stream(tenant, s) for s in plan.inputs]
        st = states[0]
        models = TenantModels(self.models, tenant, pins or {})
        schemas = {s.schema.name: arrow_schema(s.schema) for s in states}
        refs = self.references(tenant)
        pipeline = Pipeline(plan, schemas, refs, models)
        engine: Engine = pipeline
        release: Callable[[], None] = _nothing
        if self.workers is not None:
            remote = RemotePipeline(self.workers, pipeline, EngineSpec(plan, schemas), refs, models)
            engine, release = remote, remote.close
        name = plan.name
        runner = PipelineRunner(
            tenant, pipeline, st.topic, lambda: arrow_schema(st.schema), self._log, self._store,
            self.subs, self._clock, self._config, lambda reason: self._fail(tenant, name, reason),
            partial(erased_rows, self._tombstones, st),
            lambda: (tenant, name) in self.followed, runner_inputs(self._tombstones, states),
            engine, release,
        )  # fmt: skip
        self._pins[(tenant, name)] = models.pins
        return runner

    def _stream(self, tenant: str, name: str) -> StreamState:
        try:
            return self._streams.get(tenant, name)
        except NotFound:
            raise BadRequest(
                f"pipeline reads stream {name!r}, which does not exist; create the stream first",
                code="unknown_stream",
            ) from None

    def _ensure_tables(self, tenant: str, runner: PipelineRunner) -> None:
        p = runner.pipeline
        self._store.ensure_table(tenant, runner.name, p.output_schema, list(p.output_key) or None)
        self._store.ensure_table(tenant, late_table(runner.name), p.late_schema)
        self._store.ensure_table(tenant, errors_table(runner.name), p.error_schema)

    def _runner(self, tenant: str, name: str) -> PipelineRunner:
        runner = self._runners.get((tenant, name))
        if runner is None:
            raise NotFound(f"pipeline {name!r} does not exist", code="unknown_pipeline")
        return runner

    def _set(self, tenant: str, name: str, status: str, reason: str | None) -> None:
        self._catalog.set_pipeline_status(tenant, name, status, reason)
        rec = self._records.get((tenant, name))
        if rec is not None:
            self._records[(tenant, name)] = PipelineRecord(
                tenant, name, rec.sql, status, reason, rec.created_ms
            )

    def _fail(self, tenant: str, name: str, reason: str) -> None:
        log.error("pipeline_failed", tenant=tenant, pipeline=name, reason=reason)
        self._set(tenant, name, "failed", reason)


def reads(plan: Plan) -> set[str]:
    """The pipelines ``plan`` reads (``FROM <pipeline>``), at any depth."""
    inner = [plan.inner] if plan.inner is not None else []
    if plan.stream_join is not None:
        inner += [s.plan for s in (plan.stream_join.left, plan.stream_join.right) if s.plan]
    out: set[str] = set()
    for p in inner:
        out |= reads(p) | ({p.name} if p.name != plan.name else set())
    return out


def runner_inputs(tombstones: Tombstones, states: list[StreamState]) -> list[RunnerInput]:
    """The inputs of a pipeline that reads several streams (none: it reads one)."""
    if len(states) < 2:
        return []
    return [
        RunnerInput(
            s.schema.name, s.topic, partial(_schema, s), partial(erased_rows, tombstones, s)
        )
        for s in states
    ]


def _schema(st: StreamState) -> pa.Schema:
    return arrow_schema(st.schema)


def erased_rows(
    tombstones: Tombstones, st: StreamState, entries: list[LogEntry]
) -> pa.Array | None:
    """Which rows of ``entries`` to keep, when the stream has erased data subjects."""
    subject = st.schema.subject
    if subject is None or not tombstones.any(st.tenant, st.schema.name):
        return None
    schema = pa.schema([pa.field(subject, pa.string()), pa.field("_received_ms", pa.int64())])
    rows = conform(entries, schema)
    return tombstones.keep(
        st.tenant, st.schema.name, rows.column(subject).combine_chunks(),
        rows.column("_received_ms").combine_chunks(),
    )  # fmt: skip


def _waiting(st: dict[str, Any], lateness_ms: int) -> str | None:
    """Why the oldest open window has not closed yet, in words."""
    end = st.get("oldest_open_window_end_ms")
    if end is None:
        return None
    wm = st.get("watermark_ms")
    closes = end + lateness_ms
    now = "no watermark yet" if wm is None else f"the watermark is {ms_to_datetime(wm).isoformat()}"
    return (
        f"the oldest open window ends {ms_to_datetime(end).isoformat()}; it closes when the watermark "
        f"reaches {ms_to_datetime(closes).isoformat()} (window end + allowed lateness); {now}"
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, pa.Scalar):
        return v.as_py()
    return v


def _nothing() -> None:
    """Releasing a pipeline whose operators run in this process: nothing to let go of."""
