"""One pipeline at work: read the log, run the engine, commit results + state + offsets at once.

A checkpoint holds the appended rows (stateless output, late and error rows), the
engine's snapshot and the log offset it covers — one store transaction. After a crash
the runner restores the snapshot and reads again from that offset, so every result
table ends up as if the run had never stopped. Result upserts are idempotent, so they
do not wait for the checkpoint: they are flushed as soon as a cycle computes them
(``next_commit``), and a replay rewrites the same rows. The store writes happen on
the runner's ``Committer`` thread while the next batch is processed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa
import structlog

from headwater.engine import Pipeline, StepOutput
from headwater.engine.received import reading_schema
from headwater.log.ports import Log, LogEntry
from headwater.model.names import ERRORS_SUFFIX, LATE_SUFFIX
from headwater.model.time import Clock
from headwater.observability import metrics as m
from headwater.observability.tracing import span
from headwater.pipelines.committer import Commit, CommitFailed, Committer
from headwater.pipelines.inputs import RunnerInput, read_input
from headwater.pipelines.processes import WorkerLost
from headwater.pipelines.scheduler import Scheduler
from headwater.pipelines.subscriptions import Subscriptions
from headwater.store.materializer import conform
from headwater.store.ports import ResultStore, ResultWrite

log = structlog.get_logger("headwater.pipeline")

READ_ROWS = 200_000
REPORT_INTERVAL_S = 0.25  # gauges (watermark, lag, state size) are refreshed this often
RESTORE_AFTER_S = 0.5  # after its worker died, a pipeline restores its checkpoint this soon


class Engine(Protocol):
    """The operators a runner drives: a ``Pipeline`` in this process, or a
    ``RemotePipeline`` in a worker process (``workers``)."""

    def process(self, batch: pa.Table, now_ms: int, stream: str | None = None) -> StepOutput: ...

    def on_time(self, now_ms: int) -> StepOutput: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class RunnerConfig:
    """When a runner writes.

    - Result upserts are flushed as soon as a cycle produced them, but at most once per
      ``flush_gap_s``: a commit has a fixed cost, and each rewrites every group touched
      since the last one, so at 100k events/s over 10k groups a 50 ms gap costs ~10%
      less CPU than 20 ms for the same latency (cycles take about that long anyway).
    - State, offsets and appended rows are checkpointed every ``checkpoint_interval_s``.
    """

    flush_gap_s: float = 0.05
    checkpoint_interval_s: float = 1.0
    idle_wait_s: float = 0.05


Decision = Literal["checkpoint", "flush"] | None


def next_commit(
    config: RunnerConfig,
    now: float,
    last_flush: float,
    last_checkpoint: float,
    *,
    dirty: bool,
    upserts: bool,
    always_checkpoint: bool = False,
) -> Decision:
    """What to write after a cycle: a checkpoint, a flush of result upserts, or nothing.

    Upserts are idempotent, so they are flushed ahead of the checkpoint as soon as they
    exist (result latency); the snapshot, offsets and appends wait for the checkpoint
    (its cost grows with the state, not with the rows of a cycle).

    >>> cfg = RunnerConfig(flush_gap_s=0.02, checkpoint_interval_s=1.0)
    >>> next_commit(cfg, 10.0, 9.9, 9.5, dirty=True, upserts=True)
    'flush'
    >>> next_commit(cfg, 10.0, 9.99, 9.5, dirty=True, upserts=True) is None
    True
    >>> next_commit(cfg, 10.0, 9.99, 9.0, dirty=True, upserts=False)
    'checkpoint'
    """
    if dirty and (always_checkpoint or now - last_checkpoint >= config.checkpoint_interval_s):
        return "checkpoint"
    if upserts and now - last_flush >= config.flush_gap_s:
        return "flush"
    return None


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
    return name + LATE_SUFFIX


def errors_table(name: str) -> str:
    return name + ERRORS_SUFFIX


def output_topic(tenant: str, name: str) -> str:
    """The log topic a pipeline's committed result rows go to while a sink follows them."""
    return f"{tenant}.{name}.out"


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
        erased: Callable[[list[LogEntry]], pa.Array | None] = lambda _: None,
        followed: Callable[[], bool] = lambda: False,
        inputs: Sequence[RunnerInput] = (),  # a join's streams; else ``topic`` is the one
        engine: Engine | None = None,  # where the operators run; default: ``pipeline``
        release: Callable[[], None] = lambda: None,  # the engine is no longer needed
    ) -> None:
        self.tenant = tenant
        self.pipeline = pipeline  # plan, schemas, output key (its state: ``engine``'s)
        self.engine: Engine = engine or pipeline
        self.release = release
        self.topic = topic
        self.inputs = list(inputs) or [
            RunnerInput(pipeline.plan.source, topic, input_schema, erased)
        ]
        self.topics = [i.topic for i in self.inputs]
        plan = pipeline.plan
        self._stateless = plan.kind == "stateless" and plan.stream_join is None
        self._log = log_
        self._store = store
        self._subs = subs
        self._clock = clock
        self._config = config
        self._on_failure = on_failure
        self._followed = followed  # whether a sink reads the results (see ``_publish_out``)
        self.consumer = f"pipeline:{pipeline.name}"
        self.offsets = dict.fromkeys(self.topics, 0)  # committed
        self.counters = Counters()
        self.error: str | None = None
        self._labels = (tenant, pipeline.name)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._done.set()
        self._scheduler: Scheduler | None = None
        self._cycle: _Cycle | None = None

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def offset(self) -> int:
        """The committed offset of the (first) input topic."""
        return self.offsets[self.topic]

    @property
    def read_offset(self) -> int:
        """Where the next cycle reads (ahead of ``offset`` until the checkpoint)."""
        return self.positions()[self.topic]

    def positions(self) -> dict[str, int]:
        """Where the next cycle reads each input topic."""
        return dict(self._cycle.offsets if self._cycle is not None else self.offsets)

    def start(self, scheduler: Scheduler) -> None:
        """Run on ``scheduler``'s threads (until ``stop``, or a failure)."""
        if self.running:
            return
        self._stop.clear()
        self._done.clear()
        self.error = None
        self._cycle = None
        self._scheduler = scheduler
        self._scheduler.add(self)

    def stop(self) -> None:
        """Write a last checkpoint and leave the scheduler; returns when done."""
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.wake(self)
        self._done.wait(timeout=30)

    def _restore(self) -> None:
        state = self._store.consumer_state(self.tenant, self.consumer)
        if state:  # b"" is what dropping a pipeline with its tables leaves: start empty
            self.engine.restore(state)
        saved = self._store.consumer_offsets(self.tenant, self.consumer)
        self.offsets = {t: saved.get(t, 0) for t in self.topics}

    def cycle(self) -> float | None:
        """One turn on a scheduler thread: seconds until the next one, None when finished."""
        try:
            if self._cycle is None:
                self._restore()
                assert self._scheduler is not None
                committer = Committer(
                    self.name, self.pipeline.output_key, self._write, self._scheduler.commits
                )
                self._cycle = _Cycle(committer, dict(self.offsets), time.monotonic())
            c = self._cycle
            if self._stop.is_set():
                self._finish(c)
                return None
            return self._turn(c)
        except WorkerLost as exc:
            return self._lost(exc)
        except Exception as exc:
            self._failed(exc)
            return None

    def _lost(self, exc: WorkerLost) -> float | None:
        """The operators' state died with their worker: start over from the checkpoint.
        What was handed to the committer is written first (it came before)."""
        log.warning("pipeline_restoring", tenant=self.tenant, pipeline=self.name, why=str(exc))
        c, self._cycle = self._cycle, None
        if c is not None:
            try:
                c.committer.drain()
            except CommitFailed as failed:
                self._cycle = c
                self._failed(failed)
                return None
            c.committer.close()
        return RESTORE_AFTER_S

    def _failed(self, exc: Exception) -> None:
        cause = exc.__cause__ if isinstance(exc, CommitFailed) and exc.__cause__ else exc
        self.error = f"{type(cause).__name__}: {cause}"
        log.error("pipeline_failed", tenant=self.tenant, pipeline=self.name, error=self.error)
        self._on_failure(self.error)
        self._close()

    def _finish(self, c: _Cycle) -> None:
        try:
            if c.dirty:
                c.committer.submit(self._checkpoint(c, c.fresh.then(c.held)))
            c.committer.drain()
        finally:
            self._close()

    def _close(self) -> None:
        if self._cycle is not None:
            self._cycle.committer.close()
        self._cycle = None
        self._done.set()

    def _turn(self, c: _Cycle) -> float:
        """Process what the log holds; flush result upserts at once, checkpoint less often.

        Upserts are idempotent (keyed by group and window), so they may be written ahead
        of the checkpoint: a replay after a crash recomputes and rewrites the same rows.
        Appends (stateless output, late and error rows), the state snapshot and the
        offsets are written together, at a checkpoint, so nothing is ever doubled.
        Each turn reads all the log holds (up to ``READ_ROWS``), so under load the
        batches grow with the time a turn takes; the committer writes meanwhile.
        """
        c.committer.check()
        t0 = time.perf_counter()
        start = sum(c.offsets.values())
        entries = self._read(c)
        # a backlog (a full read) just drained: checkpoint now, not at the next interval,
        # so a pipeline started from the beginning commits its end as soon as it is there
        drained = c.backlog and not entries
        read = sum(c.offsets.values()) - start
        c.backlog = bool(entries) and (c.backlog or read >= READ_ROWS // 2)
        step = self._process(entries)
        key = self.pipeline.output_key
        if entries:
            c.dirty = True
        if _has_rows(step):
            c.held = c.held.then(
                StepOutput(appends=step.appends, late=step.late, errors=step.errors)
            )
            c.fresh = c.fresh.then(StepOutput(upserts=step.upserts), key)
            c.dirty = True
        clock = time.monotonic()
        decision = next_commit(
            self._config, clock, c.last_flush, c.last_checkpoint, dirty=c.dirty,
            upserts=c.fresh.upserts is not None and c.fresh.upserts.num_rows > 0,
            always_checkpoint=drained or self._stateless,  # its state is tiny
        )  # fmt: skip
        if decision == "checkpoint":
            c.committer.submit(self._checkpoint(c, c.fresh.then(c.held), t0))
            c.held, c.fresh, c.dirty = StepOutput(), StepOutput(), False
            c.last_flush = c.last_checkpoint = clock
        elif decision == "flush":
            c.committer.submit(Commit(c.fresh, started=t0))
            c.fresh, c.last_flush = StepOutput(), clock
        if clock - c.last_report >= REPORT_INTERVAL_S:
            self._report()
            c.last_report = clock
        if entries:
            return 0.0
        wait = self._config.idle_wait_s
        if c.fresh.upserts is not None and c.fresh.upserts.num_rows:  # flush once the gap is up
            wait = min(wait, max(0.0, self._config.flush_gap_s - (clock - c.last_flush)))
        return wait

    def _checkpoint(self, c: _Cycle, out: StepOutput, started: float = 0.0) -> Commit:
        state = self.engine.snapshot()
        return Commit(out, c.offsets[self.topic], state, started, tuple(c.offsets.items()))

    def _read(self, c: _Cycle) -> list[tuple[RunnerInput, list[LogEntry]]]:
        """The next entries of each input (sharing ``READ_ROWS``); moves ``c.offsets``."""
        out = []
        for i in self.inputs:
            entries, c.offsets[i.topic] = read_input(
                self._log, self._store, self.tenant, i.topic, c.offsets[i.topic],
                READ_ROWS // len(self.inputs),
            )  # fmt: skip
            if entries:
                out.append((i, entries))
        return out

    def _process(self, read: list[tuple[RunnerInput, list[LogEntry]]]) -> StepOutput:
        """Run the entries (if any) through the pipeline, then let processing time pass."""
        now = self._clock.now_ms()
        out = StepOutput()
        for i, entries in read:
            schema = reading_schema(i.schema(), self.pipeline.input_schemas[i.stream])
            batch = conform(entries, schema)
            keep = i.erased(entries)
            if keep is not None:
                batch = batch.filter(keep)
            with span(
                "pipeline.batch", tenant=self.tenant, pipeline=self.name, rows=batch.num_rows
            ):
                out = out.then(self.engine.process(batch, now, i.stream), self.pipeline.output_key)
            self.counters.rows_in += batch.num_rows
            m.PIPELINE_ROWS_IN.labels(*self._labels).inc(batch.num_rows)
        return out.then(self.engine.on_time(now), self.pipeline.output_key)

    def _write(self, commit: Commit) -> None:
        """Write one commit (on the committer's thread), then count and publish its rows."""
        name, out = self.name, commit.out
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
        offsets = dict(commit.positions) if commit.offset is not None else {}
        self._publish_out(out)
        self._store.commit(
            self.tenant,
            ResultWrite(self.consumer, offsets, appends, upserts, state=commit.state),
        )
        if commit.offset is not None:
            self.offsets.update(offsets)
            self.counters.commits += 1
        self._count_and_publish(out, commit.started)

    def _publish_out(self, out: StepOutput) -> None:
        """Result rows to the output topic, for sinks, before the store commit.

        Before, not after: a crash between the two then repeats rows (the replay
        recomputes them, and sinks key them by content) instead of losing them.
        Nothing is written while no sink follows the pipeline.
        """
        if not self._followed():
            return
        topic = output_topic(self.tenant, self.name)
        for rows in (out.upserts, out.appends):
            if rows is not None and rows.num_rows:
                for batch in rows.combine_chunks().to_batches():
                    if batch.num_rows:
                        self._log.append_blocking(topic, batch)

    def _count_and_publish(self, out: StepOutput, started: float) -> None:
        """Counters and metrics of a written commit; its rows go to live subscribers."""
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
        if started:  # from reading the batch to its results written
            seconds = time.perf_counter() - started
            self.counters.observe_batch(seconds * 1000)
            m.PIPELINE_BATCH_SECONDS.labels(*self._labels).observe(seconds)
        for table, rows in ((name, out.upserts), (name, out.appends), (late_table(name), out.late)):
            if rows is not None and rows.num_rows:
                self._subs.publish(self.tenant, table, rows)

    def _report(self) -> None:
        st = self.engine.status()
        wm = st.get("watermark_ms")
        if wm is not None:
            m.PIPELINE_WATERMARK_SECONDS.labels(*self._labels).set(wm / 1000)
            m.PIPELINE_WATERMARK_MS.labels(*self._labels).set(wm)
            m.PIPELINE_EVENT_LAG_SECONDS.labels(*self._labels).set(
                max(0.0, (self._clock.now_ms() - wm) / 1000)
            )
        m.PIPELINE_LOG_LAG_ROWS.labels(*self._labels).set(self.log_lag())
        m.PIPELINE_STATE_KEYS.labels(*self._labels).set(st.get("state_rows", 0))
        m.PIPELINE_STATE_BYTES.labels(*self._labels).set(st.get("state_bytes", 0))

    def log_lag(self) -> int:
        return sum(max(0, self._log.end_offset(t) - self.offsets[t]) for t in self.topics)


@dataclass
class _Cycle:
    """What a running pipeline carries from one turn to the next."""

    committer: Committer
    offsets: dict[str, int]  # read up to here, per input topic
    last_flush: float
    held: StepOutput = field(default_factory=StepOutput)  # appends, late, errors since checkpoint
    fresh: StepOutput = field(default_factory=StepOutput)  # upserts since the last flush
    dirty: bool = False
    backlog: bool = False  # the last reads were full: catching up with the log
    last_checkpoint: float = 0.0
    last_report: float = 0.0

    def __post_init__(self) -> None:
        self.last_checkpoint = self.last_report = self.last_flush


def _has_rows(step: StepOutput) -> bool:
    return any(
        t is not None and t.num_rows for t in (step.upserts, step.appends, step.late, step.errors)
    )
