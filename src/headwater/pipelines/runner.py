"""One pipeline at work: read the log, run the engine, commit results + state + offsets at once.

A commit holds the result upserts/appends, the late and error rows, the engine's
snapshot and the log offset it covers — one store transaction. After a crash the
runner restores the snapshot and reads again from that offset, so every result table
ends up as if the run had never stopped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import structlog

from headwater.engine import Pipeline, StepOutput
from headwater.log.ports import Log
from headwater.model.time import Clock
from headwater.observability import metrics as m
from headwater.observability.tracing import span
from headwater.pipelines.subscriptions import Subscriptions
from headwater.store.materializer import conform
from headwater.store.ports import ResultStore, ResultWrite

log = structlog.get_logger("headwater.pipeline")

READ_ROWS = 200_000


@dataclass
class RunnerConfig:
    commit_interval_s: float = 0.1  # result upserts are flushed this often
    checkpoint_interval_s: float = 1.0  # state, offsets and appended rows at least this often
    idle_wait_s: float = 0.05


@dataclass
class Counters:
    rows_in: int = 0
    rows_out: int = 0
    late_rows: int = 0
    error_rows: int = 0
    commits: int = 0
    batch_ms: list[float] = field(default_factory=list)

    def observe_batch(self, ms: float) -> None:
        self.batch_ms.append(ms)
        if len(self.batch_ms) > 256:
            del self.batch_ms[:128]


def late_table(name: str) -> str:
    return f"{name}_late"


def errors_table(name: str) -> str:
    return f"{name}_errors"


class PipelineRunner:
    def __init__(
        self,
        tenant: str,
        pipeline: Pipeline,
        topic: str,
        input_schema: Callable[[], pa.Schema],
        log_: Log,
        store: ResultStore,
        subs: Subscriptions,
        clock: Clock,
        config: RunnerConfig,
        on_failure: Callable[[str], None],
    ) -> None:
        self.tenant = tenant
        self.pipeline = pipeline
        self.topic = topic
        self._input_schema = input_schema
        self._log = log_
        self._store = store
        self._subs = subs
        self._clock = clock
        self._config = config
        self._on_failure = on_failure
        self.consumer = f"pipeline:{pipeline.name}"
        self.offset = 0
        self.counters = Counters()
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._labels = (tenant, pipeline.name)

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(target=self._run, name=f"pipeline-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _restore(self) -> None:
        state = self._store.consumer_state(self.tenant, self.consumer)
        if state:  # b"" is what dropping a pipeline with its tables leaves: start empty
            self.pipeline.restore(state)
        self.offset = self._store.consumer_offsets(self.tenant, self.consumer).get(self.topic, 0)

    def _run(self) -> None:
        try:
            self._restore()
            self._loop()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("pipeline_failed", tenant=self.tenant, pipeline=self.name, error=self.error)
            self._on_failure(self.error)

    def _loop(self) -> None:
        """Process batches; flush result upserts often, checkpoint everything less often.

        Upserts are idempotent (keyed by group and window), so they may be written ahead
        of the checkpoint: a replay after a crash recomputes and rewrites the same rows.
        Appends (stateless output, late and error rows), the state snapshot and the
        offsets are written together, at a checkpoint, so nothing is ever doubled.
        """
        held = StepOutput()  # appends, late and error rows since the last checkpoint
        fresh = StepOutput()  # upserts since the last flush
        offset = self.offset
        last_flush = last_checkpoint = time.monotonic()
        dirty = False
        key = self.pipeline.output_key
        always_checkpoint = self.pipeline.plan.kind == "stateless"  # its state is tiny
        while not self._stop.is_set():
            t0 = time.perf_counter()
            entries = self._log.read(self.topic, offset, READ_ROWS)
            now = self._clock.now_ms()
            steps = []
            if entries:
                batch = conform(entries, self._input_schema())
                with span(
                    "pipeline.batch", tenant=self.tenant, pipeline=self.name, rows=batch.num_rows
                ):
                    steps.append(self.pipeline.process(batch, now))
                offset = entries[-1].end
                self.counters.rows_in += batch.num_rows
                m.PIPELINE_ROWS_IN.labels(*self._labels).inc(batch.num_rows)
                dirty = True
            steps.append(self.pipeline.on_time(now))
            for step in steps:
                if _has_rows(step):
                    held = held.then(
                        StepOutput(appends=step.appends, late=step.late, errors=step.errors)
                    )
                    fresh = fresh.then(StepOutput(upserts=step.upserts), key)
                    dirty = True
            clock = time.monotonic()
            if dirty and (
                always_checkpoint
                or not entries
                or clock - last_checkpoint >= self._config.checkpoint_interval_s
            ):
                self._commit(fresh.then(held), offset, checkpoint=True)
                self.counters.observe_batch((time.perf_counter() - t0) * 1000)
                held, fresh, dirty = StepOutput(), StepOutput(), False
                last_flush = last_checkpoint = clock
            elif fresh.upserts is not None and clock - last_flush >= self._config.commit_interval_s:
                self._commit(fresh, offset, checkpoint=False)
                fresh, last_flush = StepOutput(), clock
            self._report()
            if not entries:
                self._log.wait_blocking(self.topic, offset, self._config.idle_wait_s)
        if dirty:
            self._commit(fresh.then(held), offset, checkpoint=True)

    def _commit(self, out: StepOutput, offset: int, checkpoint: bool) -> None:
        name = self.name
        t0 = time.perf_counter()
        appends: dict[str, pa.Table] = {}
        upserts: dict[str, tuple[pa.Table, list[str]]] = {}
        if out.appends is not None and out.appends.num_rows:
            appends[name] = out.appends
        if out.upserts is not None and out.upserts.num_rows:
            upserts[name] = (out.upserts, list(self.pipeline.output_key))
        if out.late is not None and out.late.num_rows:
            appends[late_table(name)] = out.late
        if out.errors is not None and out.errors.num_rows:
            appends[errors_table(name)] = out.errors
        write = (
            ResultWrite(consumer=self.consumer, offsets={self.topic: offset}, appends=appends,
                        upserts=upserts, state=self.pipeline.snapshot())
            if checkpoint
            else ResultWrite(consumer=self.consumer, offsets={}, upserts=upserts)
        )  # fmt: skip
        self._store.commit(self.tenant, write)
        if not checkpoint:
            self._count_and_publish(out, t0)
            return
        self.offset = offset
        self.counters.commits += 1
        self._count_and_publish(out, t0)

    def _count_and_publish(self, out: StepOutput, t0: float) -> None:
        name = self.name
        produced = sum(t.num_rows for t in (out.appends, out.upserts) if t is not None)
        late = out.late.num_rows if out.late is not None else 0
        errors = out.errors.num_rows if out.errors is not None else 0
        self.counters.rows_out += produced
        self.counters.late_rows += late
        self.counters.error_rows += errors
        m.PIPELINE_ROWS_OUT.labels(*self._labels).inc(produced)
        m.PIPELINE_LATE_ROWS.labels(*self._labels).inc(late)
        m.PIPELINE_ERROR_ROWS.labels(*self._labels).inc(errors)
        m.PIPELINE_BATCH_SECONDS.labels(*self._labels).observe(time.perf_counter() - t0)
        for table, rows in ((name, out.upserts), (name, out.appends), (late_table(name), out.late)):
            if rows is not None and rows.num_rows:
                self._subs.publish(self.tenant, table, rows)

    def _report(self) -> None:
        st = self.pipeline.status()
        wm = st.get("watermark_ms")
        if wm is not None:
            m.PIPELINE_WATERMARK_MS.labels(*self._labels).set(wm)
            m.PIPELINE_EVENT_LAG_SECONDS.labels(*self._labels).set(
                max(0.0, (self._clock.now_ms() - wm) / 1000)
            )
        m.PIPELINE_LOG_LAG_ROWS.labels(*self._labels).set(self.log_lag())
        m.PIPELINE_STATE_KEYS.labels(*self._labels).set(st.get("state_rows", 0))
        m.PIPELINE_STATE_BYTES.labels(*self._labels).set(st.get("state_bytes", 0))

    def log_lag(self) -> int:
        return max(0, self._log.end_offset(self.topic) - self.offset)


def _has_rows(step: StepOutput) -> bool:
    return any(
        t is not None and t.num_rows for t in (step.upserts, step.appends, step.late, step.errors)
    )
