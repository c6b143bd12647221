"""A full disk: appends fail with 503 and nothing half-written stays behind; once space is
free the log takes appends again by itself, with no hole in its offsets.

The disk is ``LimitedDisk``, an adapter of the log's ``Disk`` port that writes real files
but stops at a capacity, as a full file system does (the part of a write that fits is
written, then ``ENOSPC``). Raising its capacity frees space.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.log import file as file_module
from headwater.log.disk import LimitedDisk
from headwater.log.file import FileLog
from headwater.log.ports import LogFull

TOPIC = "default.readings"


def rows(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"i": pa.array(range(start, start + n), pa.int64())})


def values(log: FileLog) -> list[int]:
    return [v for e in log.read(TOPIC, 0, 10**9) for v in e.batch.column("i").to_pylist()]


def wait_until(condition, timeout_s: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def quick_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_module, "ROOM_POLL_S", 0.02)  # look for free space more often


@pytest.mark.parametrize("segment_bytes", [64 * 1024 * 1024, 3000], ids=["one", "rolling"])
async def test_a_full_disk_fails_appends_then_recovers_by_itself(
    tmp_path: Path, segment_bytes: int
) -> None:
    disk = LimitedDisk(capacity=20_000)
    log = FileLog(tmp_path, disk=disk, segment_bytes=segment_bytes)
    acked: list[int] = []
    refused = 0
    for i in range(100):  # concurrent appends: groups fail as a whole
        results = await asyncio.gather(
            *(log.append(TOPIC, rows(i * 100 + k * 10, 10)) for k in range(5)),
            return_exceptions=True,
        )
        for k, r in enumerate(results):
            if isinstance(r, LogFull):
                refused += 1
            else:
                assert not isinstance(r, BaseException), r
                acked += range(i * 100 + k * 10, i * 100 + k * 10 + 10)
        if refused:
            break
    assert refused and acked, "the disk never filled up"
    assert not log.healthy
    with pytest.raises(LogFull, match="is full") as info:
        await log.append(TOPIC, rows(0, 1))
    assert info.value.status == 503 and info.value.retry_after_s > 0
    assert values(log) == acked  # reads go on; nothing of the failed group is visible
    end = log.end_offset(TOPIC)

    disk.capacity += 10 * 1024 * 1024  # space is freed
    wait_until(lambda: log.healthy)
    result = await log.append(TOPIC, rows(10_000, 7))
    assert result.offset == end  # the failed appends' offsets were handed out again
    await log.close()

    reopened = FileLog(tmp_path, segment_bytes=segment_bytes)  # no torn tail, no damage
    assert values(reopened) == [*acked, *range(10_000, 10_007)]
    await reopened.close()


def test_a_blocked_writer_stops_with_the_log(tmp_path: Path) -> None:
    disk = LimitedDisk(capacity=100)
    log = FileLog(tmp_path, disk=disk)
    with pytest.raises(LogFull):
        log.append_blocking(TOPIC, rows(0, 1000))
    log.close_blocking()  # returns although the disk is still full
    assert FileLog(tmp_path).end_offset(TOPIC) == 0
