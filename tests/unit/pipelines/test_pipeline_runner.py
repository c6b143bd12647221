"""A runner flushes results at once, checkpoints state + offsets + appends together."""

import time
from collections.abc import Callable, Iterator

import pyarrow as pa
import pytest

from headwater.engine import Pipeline
from headwater.log.memory import MemoryLog
from headwater.model.time import ManualClock
from headwater.pipelines.runner import (
    READ_ROWS,
    PipelineRunner,
    RunnerConfig,
    late_table,
    next_commit,
)
from headwater.pipelines.scheduler import Scheduler
from headwater.pipelines.subscriptions import Subscriptions
from headwater.store.memory import MemoryStore
from headwater.store.ports import ResultWrite, RowQuery

TOPIC = "default.readings"
SCHEMA = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC"))])
SQL = """CREATE PIPELINE counts AS
SELECT device_id, window_start, count(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1 minute')
GROUP BY device_id, window_start, window_end
WITH (emit = 'changes', watermark_delay = '0 seconds')"""
CFG = RunnerConfig(flush_gap_s=0.02, checkpoint_interval_s=1.0)


@pytest.mark.parametrize(
    ("now", "last_flush", "last_checkpoint", "dirty", "upserts", "expected"),
    [
        (10.0, 9.0, 9.5, True, True, "flush"),  # results go out at once
        (10.0, 9.99, 9.5, True, True, None),  # but not twice within the gap
        (10.0, 9.99, 9.0, True, True, "checkpoint"),  # the checkpoint is due: it takes them
        (10.0, 9.0, 9.0, False, False, None),  # nothing new: nothing to write
        (10.0, 9.0, 9.5, True, False, None),  # new state alone waits for the checkpoint
    ],
)
def test_next_commit(
    now: float,
    last_flush: float,
    last_checkpoint: float,
    dirty: bool,
    upserts: bool,
    expected: str | None,
) -> None:
    decision = next_commit(CFG, now, last_flush, last_checkpoint, dirty=dirty, upserts=upserts)
    assert decision == expected


def test_a_stateless_pipeline_checkpoints_every_cycle() -> None:
    decision = next_commit(CFG, 10.0, 10.0, 10.0, dirty=True, upserts=False, always_checkpoint=True)
    assert decision == "checkpoint"


@pytest.fixture
def scheduler() -> Iterator[Callable[[MemoryLog], Scheduler]]:
    """Schedulers for the test's logs (one thread each), closed after it."""
    made: dict[int, Scheduler] = {}

    def on(log: MemoryLog) -> Scheduler:
        return made.setdefault(id(log), Scheduler(log, threads=1, commit_threads=1))

    yield on
    for s in made.values():
        s.close()


def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def make_runner(
    log: MemoryLog, store: MemoryStore, config: RunnerConfig, failures: list[str]
) -> PipelineRunner:
    pipeline = Pipeline.from_sql(SQL, SCHEMA, streams=["readings"])
    for table, schema, key in (
        ("counts", pipeline.output_schema, list(pipeline.output_key)),
        (late_table("counts"), pipeline.late_schema, None),
        ("counts_errors", pipeline.error_schema, None),
    ):
        store.ensure_table("default", table, schema, key)
    return PipelineRunner(
        "default", pipeline, TOPIC, lambda: SCHEMA, log, store, Subscriptions(),
        ManualClock(0), config, failures.append,
    )  # fmt: skip


def rows(store: MemoryStore) -> dict[str, int]:
    found = store.read_rows(RowQuery("default", "counts")).rows.to_pylist()
    return {r["device_id"]: r["n"] for r in found}


def append(log: MemoryLog, devices: list[str], ts_ms: int) -> None:
    ts = pa.array([ts_ms] * len(devices), pa.int64()).cast(SCHEMA.field("ts").type)
    log.append_blocking(TOPIC, pa.record_batch([pa.array(devices), ts], schema=SCHEMA))


def test_results_are_visible_before_the_checkpoint_and_a_restart_counts_once(
    scheduler: Callable[[MemoryLog], Scheduler],
) -> None:
    log, store, failures = MemoryLog(), MemoryStore(), []
    slow = RunnerConfig(checkpoint_interval_s=3600)  # only stop() checkpoints
    runner = make_runner(log, store, slow, failures)
    append(log, ["a", "a", "b"], 1_000)
    runner.start(scheduler(log))
    try:
        wait_for(lambda: rows(store) == {"a": 2, "b": 1})
        # Flushed upserts carry no offsets and no state: those wait for the checkpoint.
        assert store.consumer_offsets("default", runner.consumer) == {}
        assert store.consumer_state("default", runner.consumer) is None
    finally:
        runner.stop()
    assert store.consumer_offsets("default", runner.consumer) == {TOPIC: 3}
    assert runner.offset == 3
    append(log, ["a", "c"], 2_000)
    again = make_runner(log, store, slow, failures)  # a restart: restore, then resume
    again.start(scheduler(log))
    try:
        wait_for(lambda: rows(store) == {"a": 3, "b": 1, "c": 1})
    finally:
        again.stop()
    assert failures == []
    assert store.consumer_offsets("default", again.consumer) == {TOPIC: 5}


def test_a_drained_backlog_is_checkpointed_at_once(
    scheduler: Callable[[MemoryLog], Scheduler],
) -> None:
    """A pipeline started behind the log commits its end when it gets there, not at the
    next checkpoint interval; a small read (no backlog) still waits for the interval."""
    log, store, failures = MemoryLog(), MemoryStore(), []
    slow = RunnerConfig(checkpoint_interval_s=3600)
    for i in range(READ_ROWS // 10_000 + 1):  # more than one read
        append(log, [f"d{j}" for j in range(10_000)], 1_000 + i)
    end = log.end_offset(TOPIC)
    runner = make_runner(log, store, slow, failures)
    runner.start(scheduler(log))
    try:
        wait_for(lambda: store.consumer_offsets("default", runner.consumer) == {TOPIC: end})
        assert store.consumer_state("default", runner.consumer)
        append(log, ["a"], 2_000)
        wait_for(lambda: rows(store).get("a") == 1)  # flushed at once ...
        assert store.consumer_offsets("default", runner.consumer) == {TOPIC: end}  # ... only
    finally:
        runner.stop()
    assert failures == []


def test_a_crash_between_checkpoints_replays_into_the_same_rows(
    scheduler: Callable[[MemoryLog], Scheduler],
) -> None:
    """Upserts flushed after the last checkpoint are recomputed, not counted twice."""
    log, store, failures = MemoryLog(), MemoryStore(), []
    slow = RunnerConfig(checkpoint_interval_s=3600)
    append(log, ["a"], 1_000)
    first = make_runner(log, store, slow, failures)
    first.start(scheduler(log))
    wait_for(lambda: rows(store) == {"a": 1})
    first.stop()
    offsets = store.consumer_offsets("default", first.consumer)
    state = store.consumer_state("default", first.consumer)
    append(log, ["a", "a"], 2_000)
    second = make_runner(log, store, slow, failures)
    second.start(scheduler(log))
    wait_for(lambda: rows(store) == {"a": 3})  # flushed, not yet checkpointed
    second.stop()
    # As if the second run had crashed before its checkpoint: back to the first one.
    store.commit("default", ResultWrite(first.consumer, offsets, state=state))
    third = make_runner(log, store, slow, failures)
    third.start(scheduler(log))
    try:
        wait_for(lambda: third.counters.rows_out > 0)  # its rows are written
        assert rows(store) == {"a": 3}
    finally:
        third.stop()
    assert failures == []


class FailingStore(MemoryStore):
    def commit(self, tenant: str, write: ResultWrite) -> None:
        raise RuntimeError("the disk is full")


def test_a_failed_commit_fails_the_pipeline_with_the_store_s_reason(
    scheduler: Callable[[MemoryLog], Scheduler],
) -> None:
    log, failures = MemoryLog(), []
    runner = make_runner(log, FailingStore(), CFG, failures)
    append(log, ["a"], 1_000)
    runner.start(scheduler(log))
    wait_for(lambda: bool(failures))
    runner.stop()
    assert failures == ["RuntimeError: the disk is full"]
    assert runner.error == "RuntimeError: the disk is full"


def test_a_pipeline_from_the_beginning_reads_rows_the_log_no_longer_holds(
    scheduler: Callable[[MemoryLog], Scheduler],
) -> None:
    """Retention trimmed the first entries (they were stored): they come from the store."""
    log, store, failures = MemoryLog(), MemoryStore(), []
    store.ensure_table("default", "readings", pa.schema([*SCHEMA, pa.field("_offset", pa.int64())]))
    for devices in (["a", "b"], ["a"], ["c", "a"]):
        start = log.end_offset(TOPIC)
        append(log, devices, 1_000)
        stored = log.read(TOPIC, start)[0].batch
        offsets = pa.array(range(start, start + stored.num_rows), pa.int64())
        store.commit("default", ResultWrite("materialize:readings", {TOPIC: start + stored.num_rows},
                                            appends={"readings": pa.Table.from_batches([stored]).append_column("_offset", offsets)}))  # fmt: skip
    log.trim(TOPIC, 3)
    assert log.start_offset(TOPIC) == 3
    runner = make_runner(log, store, CFG, failures)
    runner.start(scheduler(log))
    try:
        wait_for(lambda: rows(store) == {"a": 3, "b": 1, "c": 1})
        append(log, ["b"], 2_000)  # and then the log, from where the store ended
        wait_for(lambda: rows(store) == {"a": 3, "b": 2, "c": 1})
    finally:
        runner.stop()
    assert failures == []
    assert store.consumer_offsets("default", runner.consumer) == {TOPIC: 6}
