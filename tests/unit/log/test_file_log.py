"""FileLog behaviour beyond the contract: files, recovery, group commit, failures."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from headwater.errors import HeadwaterError
from headwater.log import file as file_module
from headwater.log.disk import OsDisk
from headwater.log.file import FileLog
from headwater.log.ports import LogClosed, LogCorrupted

TOPIC = "default.readings"


def rows(start: int, n: int) -> pa.RecordBatch:
    return pa.record_batch({"i": pa.array(range(start, start + n), pa.int64())})


def values(log: FileLog, topic: str = TOPIC, offset: int = 0) -> list[int]:
    return [
        v for e in log.read(topic, offset, max_rows=10**9) for v in e.batch.column("i").to_pylist()
    ]


def segments(directory: Path, topic: str = TOPIC) -> list[Path]:
    return sorted((directory / topic).glob("*.log"))


def fill(directory: Path, entries: int, rows_each: int = 10, **kwargs: int) -> None:
    log = FileLog(directory, **kwargs)  # type: ignore[arg-type]
    for i in range(entries):
        log.append_blocking(TOPIC, rows(i * rows_each, rows_each), meta=f"m{i}".encode())
    log.close_blocking()


def test_reopen_recovers_topics_offsets_rows_and_meta(tmp_path: Path) -> None:
    fill(tmp_path, 5)
    log = FileLog(tmp_path)
    log.append_blocking("default.readings.quarantine", rows(0, 1))
    log.close_blocking()
    log = FileLog(tmp_path)
    assert log.topics() == ["default.readings", "default.readings.quarantine"]
    assert log.end_offset(TOPIC) == 50
    assert values(log) == list(range(50))
    assert [e.meta for e in log.read(TOPIC, 0)] == [f"m{i}".encode() for i in range(5)]
    assert log.append_blocking(TOPIC, rows(50, 1)).offset == 50
    log.close_blocking()


@pytest.mark.parametrize("damage", ["junk", "half_entry", "zeros", "half_header"])
def test_a_torn_tail_is_cut_off_and_the_log_keeps_working(tmp_path: Path, damage: str) -> None:
    fill(tmp_path, 3)
    seg = segments(tmp_path)[-1]
    size = seg.stat().st_size
    entry_size = size // 3
    if damage == "junk":
        seg.write_bytes(seg.read_bytes() + b"\x13garbage that is no entry")
    elif damage == "zeros":
        seg.write_bytes(seg.read_bytes() + bytes(4096))
    elif damage == "half_entry":
        os.truncate(seg, size - entry_size // 2)
    else:
        os.truncate(seg, size - entry_size + 10)
    log = FileLog(tmp_path)
    survivors = 30 if damage in ("junk", "zeros") else 20
    assert log.end_offset(TOPIC) == survivors
    assert values(log) == list(range(survivors))
    assert log.append_blocking(TOPIC, rows(survivors, 5)).offset == survivors
    log.close_blocking()
    log = FileLog(tmp_path)
    assert values(log) == list(range(survivors + 5))
    log.close_blocking()


def test_a_flipped_bit_in_the_last_entry_is_corruption_not_a_torn_tail(tmp_path: Path) -> None:
    # The entry is complete: it was written whole, so it may have been acknowledged.
    fill(tmp_path, 3)
    seg = segments(tmp_path)[-1]
    data = bytearray(seg.read_bytes())
    data[-20] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(LogCorrupted, match=r"damaged at byte \d+ \(log offset 20\): checksum"):
        FileLog(tmp_path)
    assert seg.read_bytes() == bytes(data)  # nothing cut


def test_segments_roll_at_the_size_limit_and_are_named_by_base_offset(tmp_path: Path) -> None:
    fill(tmp_path, 12, segment_bytes=2000)
    files = segments(tmp_path)
    assert len(files) > 2
    assert files[0].name == "00000000000000000000.log"
    bases = [int(f.stem) for f in files]
    assert all(b % 10 == 0 for b in bases) and bases == sorted(bases)
    assert all(f.stat().st_size <= 2000 for f in files)
    log = FileLog(tmp_path, segment_bytes=2000)
    assert values(log) == list(range(120))
    big = log.append_blocking(TOPIC, rows(120, 1000))  # larger than a segment: gets its own
    assert segments(tmp_path)[-1].name == f"{big.offset:020d}.log"
    log.close_blocking()


def test_trim_deletes_old_segments_and_survives_reopen(tmp_path: Path) -> None:
    fill(tmp_path, 12, segment_bytes=2000)
    log = FileLog(tmp_path, segment_bytes=2000)
    before_size = log.size_bytes()
    log.trim(TOPIC, 70)
    start = log.start_offset(TOPIC)
    assert 0 < start <= 70
    assert int(segments(tmp_path)[0].stem) == start
    assert log.size_bytes() < before_size
    assert log.size_bytes() == sum(f.stat().st_size for f in segments(tmp_path))
    log.close_blocking()
    log = FileLog(tmp_path, segment_bytes=2000)
    assert log.start_offset(TOPIC) == start
    assert values(log) == list(range(start, 120))
    log.trim(TOPIC, 10**9)
    assert len(segments(tmp_path)) == 1  # the last segment always stays
    log.close_blocking()


def test_damage_in_an_older_segment_is_an_error_naming_file_and_position(tmp_path: Path) -> None:
    fill(tmp_path, 12, segment_bytes=2000)
    old = segments(tmp_path)[0]
    data = bytearray(old.read_bytes())
    data[100] ^= 0xFF
    old.write_bytes(bytes(data))
    with pytest.raises(
        LogCorrupted, match=r"00000000000000000000\.log is damaged at byte 0"
    ) as info:
        FileLog(tmp_path, segment_bytes=2000)
    assert info.value.details["path"] == str(old)


def test_a_missing_segment_in_the_middle_is_an_error(tmp_path: Path) -> None:
    fill(tmp_path, 12, segment_bytes=2000)
    segments(tmp_path)[1].unlink()
    with pytest.raises(LogCorrupted, match="missing"):
        FileLog(tmp_path)


def test_one_directory_has_one_owner(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    with pytest.raises(HeadwaterError, match="in use"):
        FileLog(tmp_path)
    log.close_blocking()
    FileLog(tmp_path).close_blocking()


async def test_concurrent_appends_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = 0
    real = os.fdatasync

    def counting(fd: int) -> None:
        nonlocal syncs
        syncs += 1
        real(fd)

    monkeypatch.setattr(file_module.os, "fdatasync", counting)
    log = FileLog(tmp_path)
    await asyncio.gather(*(log.append(TOPIC, rows(i, 1)) for i in range(200)))
    await log.close()
    assert 1 <= syncs < 50


async def test_readers_see_nothing_until_it_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_sync, release = threading.Event(), threading.Event()
    real = os.fdatasync

    def slow(fd: int) -> None:
        in_sync.set()
        release.wait(5)
        real(fd)

    monkeypatch.setattr(file_module.os, "fdatasync", slow)
    log = FileLog(tmp_path)
    append = asyncio.create_task(log.append(TOPIC, rows(0, 3)))
    assert await asyncio.to_thread(in_sync.wait, 5)
    assert log.end_offset(TOPIC) == 0 and log.read(TOPIC, 0) == [] and log.topics() == []
    assert not append.done()
    release.set()
    assert (await append).offset == 0
    assert values(log) == [0, 1, 2]
    await log.close()


async def test_close_finishes_pending_appends(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    appends = [asyncio.create_task(log.append(TOPIC, rows(i * 10, 10))) for i in range(50)]
    await asyncio.sleep(0)  # let them enqueue
    await log.close()
    assert sorted(r.offset for r in await asyncio.gather(*appends)) == list(range(0, 500, 10))
    reopened = FileLog(tmp_path)
    assert values(reopened) == list(range(500))
    await reopened.close()


async def test_a_close_whose_caller_is_cancelled_still_closes(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    await log.append(TOPIC, rows(0, 10))
    loop = asyncio.get_running_loop()
    gate = threading.Event()  # every thread of the default pool busy: work waits in its queue
    busy = [loop.run_in_executor(None, gate.wait) for _ in range(64)]
    closing = asyncio.create_task(log.close())
    await asyncio.sleep(0)  # started, and cancelled before any thread ran it
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    gate.set()
    await asyncio.gather(*busy)
    for t in threading.enumerate():  # the close, still running on its own thread
        if t.name == "headwater-log-close":
            await asyncio.to_thread(t.join, 30)
    reopened = FileLog(tmp_path)  # refused (log_in_use) had the close been dropped
    assert values(reopened) == list(range(10))
    await reopened.close()


class FailingDisk(OsDisk):
    """The disk answers every write with an I/O error once ``broken`` is set."""

    broken = False

    def write(self, fd: int, parts: list[bytes | pa.Buffer]) -> None:
        if self.broken:
            raise OSError(errno.EIO, "Input/output error")
        super().write(fd, parts)


async def test_a_write_failure_stops_appends_but_not_reads(tmp_path: Path) -> None:
    disk = FailingDisk()
    log = FileLog(tmp_path, disk=disk)
    await log.append(TOPIC, rows(0, 2))
    disk.broken = True
    with pytest.raises(LogClosed, match="Input/output error"):
        await log.append(TOPIC, rows(2, 2))
    assert not log.healthy
    with pytest.raises(LogClosed, match="write failure"):
        await log.append(TOPIC, rows(2, 2))
    assert values(log) == [0, 1]
    await log.close()


async def test_unsynced_mode_still_reads_back(tmp_path: Path) -> None:
    log = FileLog(tmp_path, fsync=False)
    await asyncio.gather(*(log.append(TOPIC, rows(i, 1)) for i in range(20)))
    await log.close()
    log = FileLog(tmp_path, fsync=False)
    assert sorted(values(log)) == list(range(20))
    await log.close()


def test_reading_from_threads_while_the_writer_appends(tmp_path: Path) -> None:
    log = FileLog(tmp_path, segment_bytes=8192)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        offset = 0
        try:
            while not stop.is_set() or offset < log.end_offset(TOPIC):
                log.wait_blocking(TOPIC, offset, 0.05)
                for entry in log.read(TOPIC, offset, max_rows=37):
                    assert entry.batch.column("i").to_pylist() == list(
                        range(entry.offset, entry.end)
                    )
                    offset = entry.end
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(300):
        log.append_blocking(TOPIC, rows(i * 7, 7))
    stop.set()
    for t in readers:
        t.join(10)
    log.close_blocking()
    assert errors == []


async def test_a_cancelled_append_does_not_disturb_the_others(tmp_path: Path) -> None:
    log = FileLog(tmp_path)
    cancelled = asyncio.create_task(log.append(TOPIC, rows(0, 5)))
    await asyncio.sleep(0)  # enqueued: its offsets are taken
    cancelled.cancel()
    result = await log.append(TOPIC, rows(5, 5))
    assert result.offset == 5
    assert values(log) == list(range(10))  # the cancelled entry was still written
    await log.close()


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_metrics_count_appends_bytes_groups_and_size(tmp_path: Path) -> None:
    appends, nbytes = (
        sample("headwater_log_appends_total"),
        sample("headwater_log_append_bytes_total"),
    )
    groups = sample("headwater_log_group_commit_entries_count")
    fsyncs = sample("headwater_log_fsync_seconds_count")
    log = FileLog(tmp_path)
    await asyncio.gather(*(log.append(TOPIC, rows(i, 1)) for i in range(10)))
    assert sample("headwater_log_appends_total") == appends + 10
    assert sample("headwater_log_append_bytes_total") == nbytes + log.size_bytes()
    assert groups < sample("headwater_log_group_commit_entries_count") <= groups + 10
    assert sample("headwater_log_fsync_seconds_count") > fsyncs
    assert sample("headwater_log_size_bytes") == log.size_bytes()
    await log.close()
