"""The event-id index stays exact across its hot, filter and on-disk parts, spills and
restarts, while its memory holds only a bounded number of ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.ingest.dedup import IdIndex, Reservation
from headwater.ingest.idfilter import IdFilter
from headwater.ingest.idruns import IdRuns
from headwater.ingest.idspill import replay_tail, spill
from headwater.log.memory import MemoryLog

TOPIC = "default.s"


def h(values: list[int] | range) -> np.ndarray:
    """Distinct non-zero hashes for small integers, spread like real ones."""
    x = np.asarray(list(values), np.uint64) + np.uint64(1)
    return x * np.uint64(0x9E3779B97F4A7C15)


def opened(directory: Path, filter_bytes: int = 64, spill_ids: int = 4) -> IdIndex:
    return IdIndex.on_disk(directory, filter_bytes, spill_ids=spill_ids, hot_max_ids=10**6)


def restart(directory: Path, log: MemoryLog, filter_bytes: int = 64) -> IdIndex:
    """What a start does: map the runs and filter, read the log past ``covered``."""
    index = opened(directory, filter_bytes)
    replay_tail(index, TOPIC, log)
    return index


def append(log: MemoryLog, hashes: np.ndarray) -> int:
    result = log.append_blocking(
        TOPIC, pa.record_batch({"_id_hash": pa.array(hashes, pa.uint64())})
    )
    return result.offset + result.count


OPS = st.lists(
    st.tuples(
        st.sampled_from(["append", "fail", "spill", "restart", "hold"]),
        st.lists(st.integers(0, 60), min_size=1, max_size=6, unique=True),
    ),
    max_size=40,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_the_index_answers_exactly_what_was_appended(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, list[int]]]
) -> None:
    directory = tmp_path_factory.mktemp("ids")
    log = MemoryLog()
    index = opened(directory)  # a 64-byte filter: most lookups are false positives
    remembered: set[int] = set()
    held: list[tuple[Reservation, np.ndarray]] = []
    for op, values in ops:
        fresh = [v for v in values if v not in remembered]
        hashes = h(fresh)
        if op in ("append", "fail", "hold") and fresh:
            reservation = index.reserve(hashes)
            if op == "append":
                reservation.settle(append(log, hashes))
                remembered |= set(fresh)
            elif op == "fail":
                reservation.release()
            else:  # in flight until the next spill or restart
                held.append((reservation, hashes))
                remembered |= set(fresh)
        elif op == "spill":
            for reservation, pending in held:
                reservation.settle(append(log, pending))
            held = []
            while spill(index, TOPIC, log):
                pass
        elif op == "restart" and not held:
            index = restart(directory, log)
        universe = h(range(61))
        assert index.seen(universe).tolist() == [v in remembered for v in range(61)]


def test_spilled_generations_leave_memory_and_a_restart_reads_only_the_tail(
    tmp_path: Path,
) -> None:
    log = MemoryLog()
    index = opened(tmp_path, filter_bytes=4096, spill_ids=1000)
    for k in range(50):
        hashes = h(range(k * 1000, (k + 1) * 1000))
        index.reserve(hashes).settle(append(log, hashes))
        spill(index, TOPIC, log)
    assert index.hot_ids() <= 2000  # everything older is on disk only
    runs = index.runs
    assert runs is not None and len(runs) >= 48_000
    assert runs.run_count() <= 8  # merged as they pile up
    assert log.end_offset(TOPIC) - runs.covered <= 2000
    again = restart(tmp_path, log, filter_bytes=2048)  # resized: refilled from the runs
    assert again.hot_ids() <= 2000  # a start reads the tail past `covered`, not the history
    assert again.seen(h(range(50_000))).all()
    assert not again.seen(h(range(50_000, 51_000))).any()


def test_runs_merge_into_one_sorted_file_and_survive_reopening(tmp_path: Path) -> None:
    runs = IdRuns(tmp_path / "r")
    rng = np.random.default_rng(7)
    everything = []
    for size in (5000, 3000, 2000, 1500, 800):
        part = np.unique(rng.integers(1, 2**63, size, dtype=np.uint64))
        everything.append(part)
        runs.add(part, covered=len(everything))
    every = np.concatenate(everything)
    again = IdRuns(tmp_path / "r")
    assert again.covered == 5 and len(again) == every.size
    for run in again.iter_all():
        assert np.all(run[1:] >= run[:-1])
    assert again.contains(every).all()
    assert not again.contains(every + np.uint64(1)).any()
    assert len(list((tmp_path / "r").glob("run-*.u64"))) == again.run_count()


@given(st.lists(st.integers(1, 2**64 - 1), max_size=300), st.integers(8, 256))
def test_the_filter_never_forgets_an_id(values: list[int], nbytes: int) -> None:
    f = IdFilter(None, nbytes)
    hashes = np.asarray(values, np.uint64)
    f.add(hashes)
    assert f.might_contain(hashes).all()


def test_memory_is_bounded_the_index_says_full_until_the_spiller_catches_up(
    tmp_path: Path,
) -> None:
    log = MemoryLog()
    index = IdIndex.on_disk(tmp_path, 4096, spill_ids=100, hot_max_ids=300)
    for k in range(3):
        hashes = h(range(k * 100, (k + 1) * 100))
        index.reserve(hashes).settle(append(log, hashes))
    assert index.full()  # ingest answers 503 instead of growing memory
    while spill(index, TOPIC, log):
        pass
    assert not index.full() and index.hot_ids() <= 100
    assert index.seen(h(range(300))).all()
