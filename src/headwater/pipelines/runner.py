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
    commit_interval_s: float = 0.1
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
        pending = StepOutput()
        pending_offset = self.offset
        last_commit = time.monotonic()
        dirty = False
        key = self.pipeline.output_key
        while not self._stop.is_set():
            t0 = time.perf_counter()
            entries = self._log.read(self.topic, pending_offset, READ_ROWS)
            now = self._clock.now_ms()
            if entries:
                batch = conform(entries, self._input_schema())
                with span("pipeline.batch", tenant=self.tenant, pipeline=self.name, rows=batch.num_rows):
                    pending = pending.then(self.pipeline.process(batch, now), key)
                pending_offset = entries[-1].end
                self.counters.rows_in += batch.num_rows
                m.PIPELINE_ROWS_IN.labels(*self._labels).inc(batch.num_rows)
                dirty = True
            step = self.pipeline.on_time(now)
            if _has_rows(step):
                pending = pending.then(step, key)
                dirty = True
            due = time.monotonic() - last_commit >= self._config.commit_interval_s
            if dirty and (due or not entries):
                self._commit(pending, pending_offset)
                self.counters.observe_batch((time.perf_counter() - t0) * 1000)
                pending, dirty, last_commit = StepOutput(), False, time.monotonic()
            self._report()
            if not entries:
                self._log.wait_blocking(self.topic, pending_offset, self._config.idle_wait_s)
        if dirty:
            self._commit(pending, pending_offset)

    def _commit(self, out: StepOutput, offset: int) -> None:
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
        self._store.commit(
            self.tenant,
            ResultWrite(
                consumer=self.consumer, offsets={self.topic: offset}, appends=appends,
                upserts=upserts, state=self.pipeline.snapshot(),
            ),
        )  # fmt: skip
        self.offset = offset
        self.counters.commits += 1
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
            m.PIPELINE_EVENT_LAG_SECONDS.labels(*self._labels).set(max(0.0, (self._clock.now_ms() - wm) / 1000))
        m.PIPELINE_LOG_LAG_ROWS.labels(*self._labels).set(self.log_lag())
        m.PIPELINE_STATE_KEYS.labels(*self._labels).set(st.get("state_rows", 0))
        m.PIPELINE_STATE_BYTES.labels(*self._labels).set(st.get("state_bytes", 0))

    def log_lag(self) -> int:
        return max(0, self._log.end_offset(self.topic) - self.offset)


def _has_rows(step: StepOutput) -> bool:
    return any(t is not None and t.num_rows for t in (step.upserts, step.appends, step.late, step.errors))
