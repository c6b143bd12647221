"""A runner of a join reads two topics, each from its own offset, and commits both offsets
with the state and the appended rows: a restart neither loses nor repeats a joined row."""

import time
from collections.abc import Callable

import pyarrow as pa

from headwater.engine import Pipeline
from headwater.log.memory import MemoryLog
from headwater.model.time import ManualClock
from headwater.pipelines.inputs import RunnerInput
from headwater.pipelines.runner import PipelineRunner, RunnerConfig, errors_table, late_table
from headwater.pipelines.scheduler import Scheduler
from headwater.pipelines.subscriptions import Subscriptions
from headwater.store.memory import MemoryStore
from headwater.store.ports import RowQuery

T = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([("id", pa.string()), ("k", pa.string()), ("ts", T)])
TOPICS = {"clicks": "default.clicks", "views": "default.views"}
SQL = """CREATE PIPELINE pairs AS
SELECT c.id AS click, v.id AS view FROM clicks c JOIN views v
ON c.k = v.k AND c.ts BETWEEN v.ts - INTERVAL '10 seconds' AND v.ts"""


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def make_runner(log: MemoryLog, store: MemoryStore, failures: list[str]) -> PipelineRunner:
    p = Pipeline.from_sql(SQL, {"clicks": SCHEMA, "views": SCHEMA}, streams=list(TOPICS))
    store.ensure_table("default", "pairs", p.output_schema, None)
    store.ensure_table("default", late_table("pairs"), p.late_schema)
    store.ensure_table("default", errors_table("pairs"), p.error_schema)
    inputs = [RunnerInput(s, t, lambda: SCHEMA) for s, t in TOPICS.items()]
    return PipelineRunner(
        "default", p, TOPICS["clicks"], lambda: SCHEMA, log, store, Subscriptions(),
        ManualClock(0), RunnerConfig(checkpoint_interval_s=0.0), failures.append,
        inputs=inputs,
    )  # fmt: skip


def append(log: MemoryLog, stream: str, rows: list[tuple[str, str, int]]) -> None:
    ids, keys, ts = zip(*rows, strict=True)
    batch = pa.record_batch([pa.array(ids), pa.array(keys), pa.array(ts, pa.int64()).cast(T)],
                            schema=SCHEMA)  # fmt: skip
    log.append_blocking(TOPICS[stream], batch)


def pairs(store: MemoryStore) -> list[tuple[str, str]]:
    found = store.read_rows(RowQuery("default", "pairs", limit=1000)).rows.to_pylist()
    return sorted((r["click"], r["view"]) for r in found)


def test_a_join_commits_both_offsets_and_a_restart_repeats_nothing() -> None:
    log, store, failures = MemoryLog(), MemoryStore(), []
    scheduler = Scheduler(log, threads=1, commit_threads=1)
    try:
        runner = make_runner(log, store, failures)
        append(log, "clicks", [("c1", "a", 1_000), ("c2", "b", 2_000)])
        append(log, "views", [("v1", "a", 5_000)])
        runner.start(scheduler)
        wait_for(lambda: pairs(store) == [("c1", "v1")])
        runner.stop()
        offsets = store.consumer_offsets("default", runner.consumer)
        assert offsets == {TOPICS["clicks"]: 2, TOPICS["views"]: 1}
        append(log, "views", [("v2", "b", 3_000), ("v3", "a", 9_000)])
        again = make_runner(log, store, failures)  # restores the join's rows, reads on
        again.start(scheduler)
        wait_for(lambda: len(pairs(store)) == 3)
        again.stop()
        assert pairs(store) == [("c1", "v1"), ("c1", "v3"), ("c2", "v2")]
        assert store.consumer_offsets("default", again.consumer)[TOPICS["views"]] == 3
        assert failures == []
    finally:
        scheduler.close()
