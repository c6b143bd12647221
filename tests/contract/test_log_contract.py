"""The ``Log`` contract: every adapter must pass this suite unchanged."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.log.file import FileLog
from headwater.log.memory import MemoryLog
from headwater.log.ports import InvalidTopic, Log, LogClosed

TOPIC = "default.readings"


def make_memory(_: Path) -> Log:
    return MemoryLog()


def make_file(tmp_path: Path) -> Log:
    # Small segments, so rolling and trimming happen in every test.
    return FileLog(tmp_path / "log", segment_bytes=4096)


@pytest.fixture(params=[make_memory, make_file], ids=["memory", "file"])
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Log]:
    factory: Callable[[Path], Log] = request.param
    adapter = factory(tmp_path)
    yield adapter
    await adapter.close()


def rows(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"i": pa.array(range(start, start + n), pa.int64())})


def values(entries: list) -> list[int]:
    return [v for e in entries for v in e.batch.column("i").to_pylist()]


async def test_append_then_read_round_trips_batch_and_meta(log: Log) -> None:
    result = await log.append(TOPIC, rows(0, 3), meta=b"key-1")
    assert (result.topic, result.offset, result.count) == (TOPIC, 0, 3)
    result = await log.append(TOPIC, rows(3, 2))
    assert result.offset == 3
    entries = log.read(TOPIC, 0)
    assert [(e.offset, e.end, e.meta) for e in entries] == [(0, 3, b"key-1"), (3, 5, b"")]
    assert values(entries) == [0, 1, 2, 3, 4]
    assert log.end_offset(TOPIC) == 5
    assert log.start_offset(TOPIC) == 0


async def test_concurrent_appends_get_contiguous_offsets(log: Log) -> None:
    sizes = [random.randint(1, 20) for _ in range(300)]
    results = await asyncio.gather(*(log.append(TOPIC, rows(0, n)) for n in sizes))
    spans = sorted((r.offset, r.offset + r.count) for r in results)
    assert spans[0][0] == 0
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert log.end_offset(TOPIC) == sum(sizes)
    entries = log.read(TOPIC, 0, max_rows=10**9)
    assert [(e.offset, e.end) for e in entries] == spans


async def test_blocking_appends_from_threads_interleave_with_async_ones(log: Log) -> None:
    def worker() -> None:
        for _ in range(50):
            log.append_blocking(TOPIC, rows(0, 2))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    await asyncio.gather(*(log.append(TOPIC, rows(0, 1)) for _ in range(100)))
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    assert log.end_offset(TOPIC) == 3 * 50 * 2 + 100
    entries = log.read(TOPIC, 0, max_rows=10**9)
    assert all(a.end == b.offset for a, b in itertools.pairwise(entries))


async def test_read_from_the_middle_of_an_entry_slices_it(log: Log) -> None:
    await log.append(TOPIC, rows(0, 10), meta=b"m")
    await log.append(TOPIC, rows(10, 10))
    entries = log.read(TOPIC, 7)
    assert [(e.offset, e.batch.num_rows, e.meta) for e in entries] == [(7, 3, b"m"), (10, 10, b"")]
    assert values(entries) == list(range(7, 20))
    assert values(log.read(TOPIC, 19)) == [19]


async def test_max_rows_returns_whole_entries_up_to_the_limit(log: Log) -> None:
    for i in range(10):
        await log.append(TOPIC, rows(i * 10, 10))
    assert [e.offset for e in log.read(TOPIC, 0, max_rows=25)] == [0, 10]
    assert [e.offset for e in log.read(TOPIC, 0, max_rows=30)] == [0, 10, 20]
    # the first entry comes back whole even when it alone is over the limit
    assert [(e.offset, e.batch.num_rows) for e in log.read(TOPIC, 5, max_rows=1)] == [(5, 5)]
    with pytest.raises(ValueError):
        log.read(TOPIC, 0, max_rows=0)
    with pytest.raises(ValueError):
        log.read(TOPIC, -1)


async def test_read_at_the_end_or_of_an_unknown_topic_is_empty(log: Log) -> None:
    assert log.read(TOPIC, 0) == []
    assert log.end_offset(TOPIC) == 0
    assert log.start_offset(TOPIC) == 0
    await log.append(TOPIC, rows(0, 4))
    assert log.read(TOPIC, 4) == []
    assert log.read(TOPIC, 100) == []


async def test_wait_wakes_promptly_on_append(log: Log) -> None:
    await log.append(TOPIC, rows(0, 1))
    assert await log.wait(TOPIC, 0, timeout_s=0.0)  # already past
    waiter = asyncio.create_task(log.wait(TOPIC, 1, timeout_s=600.0))
    await asyncio.sleep(0.02)
    assert not waiter.done()
    await log.append(TOPIC, rows(1, 1))
    assert await waiter  # True: woken by the append, long before its timeout


async def test_wait_times_out(log: Log) -> None:
    started = time.monotonic()
    assert not await log.wait(TOPIC, 0, timeout_s=0.05)
    assert time.monotonic() - started > 0.04
    assert not await asyncio.to_thread(log.wait_blocking, TOPIC, 0, 0.05)


async def test_wait_blocking_wakes_on_append_from_the_loop(log: Log) -> None:
    woke: list[bool] = []
    thread = threading.Thread(target=lambda: woke.append(log.wait_blocking(TOPIC, 0, 600.0)))
    thread.start()
    await asyncio.sleep(0.02)
    await log.append(TOPIC, rows(0, 1))
    await asyncio.to_thread(thread.join)
    assert woke == [True]  # woken by the append, long before its timeout


async def test_wait_any_blocking_wakes_when_any_topic_passes_its_offset(log: Log) -> None:
    await log.append("t.a", rows(0, 2))
    assert log.wait_any_blocking({"t.a": 1, "t.b": 0}, 5.0)  # a is past 1 already
    assert not log.wait_any_blocking({"t.a": 2, "t.b": 0}, 0.05)
    woke: list[bool] = []
    thread = threading.Thread(
        target=lambda: woke.append(log.wait_any_blocking({"t.a": 2, "t.b": 0}, 30.0))
    )
    thread.start()
    await log.append("t.b", rows(0, 1))
    await asyncio.to_thread(thread.join)
    assert woke == [True]


async def test_close_releases_waiters(log: Log) -> None:
    waiter = asyncio.create_task(log.wait(TOPIC, 0, timeout_s=600.0))
    await asyncio.sleep(0.01)
    await log.close()
    assert not await asyncio.wait_for(waiter, 60)  # released by the close, not its timeout


async def test_trim_moves_start_and_keeps_later_rows(log: Log) -> None:
    for i in range(20):
        await log.append(TOPIC, rows(i * 100, 100))
    log.trim(TOPIC, 1050)
    start = log.start_offset(TOPIC)
    assert 0 < start <= 1000 and start % 100 == 0
    assert log.end_offset(TOPIC) == 2000
    entries = log.read(TOPIC, 0, max_rows=10**9)
    assert entries[0].offset == start
    assert values(entries) == list(range(start, 2000))
    log.trim(TOPIC, 10**9)  # never loses what is still needed to append after it
    await log.append(TOPIC, rows(2000, 1))
    assert values(log.read(TOPIC, 2000)) == [2000]


async def test_topics_lists_every_appended_topic(log: Log) -> None:
    assert log.topics() == []
    await log.append("default.readings.quarantine", rows(0, 1))
    await log.append("default.readings", rows(0, 1))
    await log.append("other-tenant.readings_2", rows(0, 1))
    assert log.topics() == [
        "default.readings",
        "default.readings.quarantine",
        "other-tenant.readings_2",
    ]
    assert log.end_offset("default.readings.quarantine") == 1


@pytest.mark.parametrize(
    "topic", ["", "a/b", "..", "a..b", ".a", "a.", "../etc", "a b", "ü", "x" * 201]
)
async def test_unsafe_topic_names_are_rejected(log: Log, topic: str) -> None:
    with pytest.raises(InvalidTopic):
        await log.append(topic, rows(0, 1))
    with pytest.raises(InvalidTopic):
        log.read(topic, 0)


async def test_empty_batches_are_refused(log: Log) -> None:
    with pytest.raises(ValueError):
        await log.append(TOPIC, rows(0, 0))


async def test_all_headwater_column_types_and_nulls_survive(log: Log) -> None:
    ts = pa.timestamp("ms", tz="UTC")
    batch = pa.record_batch(
        {
            "s": pa.array(["a", None, "ünïcode"], pa.string()),
            "i": pa.array([1, None, -(2**63)], pa.int64()),
            "f": pa.array([1.5, None, float("inf")], pa.float64()),
            "b": pa.array([True, None, False], pa.bool_()),
            "t": pa.array(
                [datetime(2024, 1, 1, tzinfo=UTC), None, datetime(1970, 1, 1, tzinfo=UTC)], ts
            ),
        }
    )
    await log.append(TOPIC, batch)
    await log.append(TOPIC, pa.record_batch({"other": pa.array(["schema"])}))  # schemas may change
    first, second = log.read(TOPIC, 0)
    assert first.batch.schema == batch.schema
    assert first.batch.equals(batch)
    assert second.batch.column("other").to_pylist() == ["schema"]
    assert log.read(TOPIC, 1)[0].batch.equals(batch.slice(1))


async def test_size_grows_with_appends(log: Log) -> None:
    before = log.size_bytes()
    await log.append(TOPIC, rows(0, 1000))
    assert log.size_bytes() >= before + 8000


async def test_append_after_close_raises_a_clear_error(log: Log) -> None:
    await log.append(TOPIC, rows(0, 1))
    await log.close()
    with pytest.raises(LogClosed, match="closed"):
        await log.append(TOPIC, rows(0, 1))
    with pytest.raises(LogClosed):
        log.append_blocking(TOPIC, rows(0, 1))
    await log.close()  # closing twice is harmless


async def test_read_meta_gives_whole_entries_without_their_rows(log: Log) -> None:
    for i in range(12):
        await log.append(TOPIC, rows(i * 100, 100), meta=f"m{i}".encode() if i % 2 else b"")
    got = log.read_meta(TOPIC, 250, max_entries=3)
    assert got == [(200, 300, b""), (300, 400, b"m3"), (400, 500, b"")]
    every = log.read_meta(TOPIC, 0)
    assert [(s, e) for s, e, _ in every] == [(i * 100, i * 100 + 100) for i in range(12)]
    assert [m for _, _, m in every] == [e.meta for e in log.read(TOPIC, 0, max_rows=10**9)]
    assert log.read_meta(TOPIC, 1200) == [] and log.read_meta("default.none", 0) == []
    log.trim(TOPIC, 650)
    assert log.read_meta(TOPIC, 0)[0][0] == log.start_offset(TOPIC)


def _zero_odd(batch: pa.RecordBatch) -> pa.RecordBatch | None:
    """Every odd value set to 0; None for an entry holding none."""
    col = batch.column("i")
    odd = pa.compute.equal(pa.compute.bit_wise_and(col, 1), 1)
    if not pa.compute.any(odd).as_py():
        return None
    new = pa.compute.if_else(odd, pa.scalar(0, pa.int64()), col)
    return pa.RecordBatch.from_arrays([new], schema=batch.schema)


async def test_rewrite_replaces_entries_in_place_keeping_offsets_and_meta(log: Log) -> None:
    from headwater.log.rewrite import Rewritable

    assert isinstance(log, Rewritable)
    for i in range(10):  # entries of 2 rows; the even ones hold no odd value after the first
        await log.append(TOPIC, pa.record_batch({"i": pa.array([i * 2, i * 2 + (i < 5)], pa.int64())}), meta=f"m{i}".encode())  # fmt: skip
    changed = await asyncio.to_thread(log.rewrite_blocking, TOPIC, _zero_odd)
    assert changed == 5
    entries = log.read(TOPIC, 0, max_rows=10**9)
    assert [(e.offset, e.end, e.meta) for e in entries] == [
        (i * 2, i * 2 + 2, f"m{i}".encode()) for i in range(10)
    ]
    assert values(entries) == [v for i in range(10) for v in (i * 2, 0 if i < 5 else i * 2)]
    await log.append(TOPIC, rows(20, 3))  # appends go on after a rewrite
    assert values(log.read(TOPIC, 18)) == [18, 18, 20, 21, 22]
    assert await asyncio.to_thread(log.rewrite_blocking, TOPIC, _zero_odd) == 1
    assert values(log.read(TOPIC, 20)) == [20, 0, 22]
    assert await asyncio.to_thread(log.rewrite_blocking, "default.none", _zero_odd) == 0


async def test_rewrite_refuses_a_change_of_length(log: Log) -> None:
    await log.append(TOPIC, rows(0, 3))
    with pytest.raises(ValueError, match="number of rows"):
        await asyncio.to_thread(log.rewrite_blocking, TOPIC, lambda b: b.slice(1))
    assert values(log.read(TOPIC, 0)) == [0, 1, 2]


async def test_rewritten_entries_survive_a_reopen(tmp_path: Path) -> None:
    first = FileLog(tmp_path / "log", segment_bytes=4096)
    for i in range(40):
        await first.append(TOPIC, rows(i * 10, 10))
    await asyncio.to_thread(first.rewrite_blocking, TOPIC, _zero_odd)
    await first.append(TOPIC, rows(400, 10))
    await first.close()
    (tmp_path / "log" / TOPIC / "00000000000000000000.log.rewrite").write_bytes(b"half")
    again = FileLog(tmp_path / "log", segment_bytes=4096)
    try:
        got = values(again.read(TOPIC, 0, max_rows=10**9))
        assert got == [v if v % 2 == 0 else 0 for v in range(400)] + list(range(400, 410))
        assert not list((tmp_path / "log" / TOPIC).glob("*.rewrite"))
    finally:
        await again.close()
