"""G1 under damage: a damaged log either opens with nothing acknowledged lost, or refuses.

The matrix truncates the log's files at every entry boundary and inside every entry,
and flips bytes at random places. A torn tail — the last entry cut short, as a crash
leaves it — is cut off; anything else refuses to open, naming the file and offset,
and changes nothing on disk. A log that ends below an offset a consumer committed
refuses too. ``repair`` then cuts the damage out, never re-using a committed offset.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.log.damage import inspect_log, repair_topic
from headwater.log.file import FileLog
from headwater.log.ports import LogCorrupted
from headwater.log.segment import HEADER, frame_at

TOPIC = "default.readings"
ENTRIES = 12
ROWS = 10
CONSUMER = "default/materialize:readings"


def rows(start: int, n: int = ROWS) -> pa.RecordBatch:
    return pa.record_batch({"i": pa.array(range(start, start + n), pa.int64())})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log of 12 acknowledged entries (offsets 0..119) over several segments."""
    directory = tmp_path_factory.mktemp("pristine")
    log = FileLog(directory, segment_bytes=2000)
    for i in range(ENTRIES):
        assert log.append_blocking(TOPIC, rows(i * ROWS)).offset == i * ROWS
    log.close_blocking()
    assert len(segment_files(directory)) >= 3
    return directory


def segment_files(directory: Path) -> list[Path]:
    return sorted((directory / TOPIC).glob("*.log"))


def entry_spans(directory: Path) -> list[tuple[Path, int, int]]:
    """(file, byte position, size) of every entry."""
    spans = []
    for path in segment_files(directory):
        data = memoryview(path.read_bytes())
        pos = 0
        while pos < len(data):
            framed = frame_at(data, pos)
            assert not isinstance(framed, str)
            spans.append((path, pos, framed[2]))
            pos += framed[2]
    return spans


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (directory / TOPIC).iterdir()}


def values(log: FileLog, offset: int = 0) -> list[int]:
    return [v for e in log.read(TOPIC, offset, 10**9) for v in e.batch.column("i").to_pylist()]


def open_or_refuse(directory: Path, committed: dict[str, int]) -> FileLog | None:
    """Open the log; on a refusal check it is clear and left the files as they were."""
    before = snapshot(directory)
    try:
        log = FileLog(directory, committed={TOPIC: committed} if committed else None)
    except LogCorrupted as exc:
        message = str(exc)
        assert "\n" not in message and "offset" in message
        assert TOPIC in message  # names the file (in the topic's directory) or the topic
        assert "headwater log repair" in message
        assert snapshot(directory) == before, "a refused open changed files"
        return None
    return log


def check_nothing_acknowledged_lost(log: FileLog, committed: dict[str, int]) -> None:
    """Every row the log still holds is the one acknowledged; nothing a consumer read is gone."""
    end = log.end_offset(TOPIC)
    got = values(log)
    assert got == list(range(end)), "the log serves rows that differ from those acknowledged"
    assert end % ROWS == 0, "a partial entry survived"
    assert end >= max(committed.values(), default=0)
    log.close_blocking()


def damaged_copy(pristine: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(pristine, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def cut_points(pristine: Path) -> list[tuple[int, int]]:
    """(file index, size to truncate to): every entry boundary and inside every entry."""
    files = segment_files(pristine)
    points = set()
    for path, pos, size in entry_spans(pristine):
        i = files.index(path)
        points |= {(i, pos), (i, pos + 5), (i, pos + HEADER.size + 3), (i, pos + size - 8)}
    return sorted(points)


@pytest.mark.parametrize("caught_up", [True, False], ids=["consumer-caught-up", "no-consumer"])
def test_truncation_anywhere_recovers_losslessly_or_refuses(
    pristine: Path, tmp_path: Path, caught_up: bool
) -> None:
    committed = {CONSUMER: ENTRIES * ROWS} if caught_up else {}
    outcomes = {"refused": 0, "opened": 0}
    last = len(segment_files(pristine)) - 1
    for n, (index, size) in enumerate(cut_points(pristine)):
        directory = damaged_copy(pristine, tmp_path, f"cut{n}")
        path = segment_files(directory)[index]
        path.write_bytes(path.read_bytes()[:size])
        log = open_or_refuse(directory, committed)
        if log is None:
            outcomes["refused"] += 1
            continue
        outcomes["opened"] += 1
        end = log.end_offset(TOPIC)
        check_nothing_acknowledged_lost(log, committed)
        if caught_up:
            assert end == ENTRIES * ROWS  # a consumer read everything: nothing may go
        else:
            # Only a cut in the last segment can open, and then only the entries it cut.
            assert index == last, f"a cut in segment {index} opened at end {end}"
    if caught_up:
        assert outcomes["opened"] == 0
    else:
        assert outcomes["opened"] > 0 and outcomes["refused"] > 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_flipped_byte_anywhere_refuses_to_open(
    pristine: Path, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    directory = damaged_copy(pristine, tmp_path_factory.mktemp("flip"), "log")
    files = segment_files(directory)
    path = files[data.draw(st.integers(0, len(files) - 1), label="file")]
    raw = bytearray(path.read_bytes())
    raw[data.draw(st.integers(0, len(raw) - 1), label="byte")] ^= data.draw(
        st.integers(1, 255), label="mask"
    )
    path.write_bytes(bytes(raw))
    # Flips never change a file's length: every entry stays complete, so none is torn.
    assert open_or_refuse(directory, {}) is None


def test_a_damaged_length_field_in_the_last_entry_is_not_taken_for_a_torn_tail(
    pristine: Path, tmp_path: Path
) -> None:
    directory = damaged_copy(pristine, tmp_path, "len")
    path, pos, _ = entry_spans(directory)[-1]
    raw = bytearray(path.read_bytes())
    struct.pack_into("<Q", raw, pos + 24, 10**9)  # payload_len: now it looks cut short
    path.write_bytes(bytes(raw))
    assert open_or_refuse(directory, {}) is None


def test_a_log_ending_below_a_committed_offset_refuses_naming_the_consumer(
    pristine: Path, tmp_path: Path
) -> None:
    directory = damaged_copy(pristine, tmp_path, "short")
    segment_files(directory)[-1].unlink()  # a whole last segment lost: no visible damage
    with pytest.raises(LogCorrupted, match=rf"{CONSUMER} \(at 120\) already committed past"):
        FileLog(directory, committed={TOPIC: {CONSUMER: 120}})
    log = FileLog(directory)  # without consumers it is a shorter, sound log
    assert log.end_offset(TOPIC) < 120
    log.close_blocking()


def repair(
    directory: Path, committed: dict[str, int]
) -> list[tuple[int, int | None, tuple[str, ...]]]:
    reports = inspect_log(directory, {TOPIC: committed})
    lost = [x for r in reports for x in repair_topic(r, directory.parent / "backup")]
    return [(x.start, x.stop, x.read_by) for x in lost]


def test_repair_cuts_a_damaged_middle_entry_and_keeps_everything_else(
    pristine: Path, tmp_path: Path
) -> None:
    directory = damaged_copy(pristine, tmp_path, "mid")
    spans = entry_spans(directory)
    path, pos, size = spans[-2]  # in the last segment, with an intact entry after it
    assert path == spans[-1][0]
    raw = bytearray(path.read_bytes())
    raw[pos + size // 2] ^= 0x40
    path.write_bytes(bytes(raw))
    damaged_offset = (len(spans) - 2) * ROWS
    committed = {CONSUMER: ENTRIES * ROWS, "default/pipeline:slow": damaged_offset}
    with pytest.raises(LogCorrupted, match=rf"log offset {damaged_offset}\): checksum mismatch"):
        FileLog(directory, committed={TOPIC: committed})

    assert repair(directory, committed) == [
        (damaged_offset, damaged_offset + ROWS, (CONSUMER,)),
    ]
    assert (tmp_path / "backup" / TOPIC / path.name).read_bytes() == bytes(raw)
    log = FileLog(directory, committed={TOPIC: committed})
    expected = [v for v in range(ENTRIES * ROWS) if not damaged_offset <= v < damaged_offset + ROWS]
    assert values(log) == expected
    # The consumer that had not read the damaged entry resumes after the gap.
    assert values(log, damaged_offset)[0] == damaged_offset + ROWS
    assert log.append_blocking(TOPIC, rows(120)).offset == 120
    log.close_blocking()
    log = FileLog(directory)
    assert values(log)[-ROWS:] == list(range(120, 130))
    log.close_blocking()


def test_repair_never_hands_out_an_offset_a_consumer_committed(
    pristine: Path, tmp_path: Path
) -> None:
    directory = damaged_copy(pristine, tmp_path, "rebase")
    path, pos, _ = entry_spans(directory)[-2]
    path.write_bytes(path.read_bytes()[: pos + 40])  # the last two acknowledged entries cut
    committed = {CONSUMER: 120}
    with pytest.raises(LogCorrupted, match="already committed past"):
        FileLog(directory, committed={TOPIC: committed})
    assert repair(directory, committed) == [(100, None, (CONSUMER,))]
    log = FileLog(directory, committed={TOPIC: committed})
    assert log.end_offset(TOPIC) == 120
    assert log.append_blocking(TOPIC, rows(500, 3)).offset == 120  # not 80: never re-used
    assert values(log, 120) == [500, 501, 502]
    assert values(log, 105) == [500, 501, 502]  # inside the cut range: reads skip it
    log.close_blocking()
    assert inspect_log(directory, {TOPIC: committed})[0].sound


def test_verify_reports_every_damaged_spot(pristine: Path, tmp_path: Path) -> None:
    directory = damaged_copy(pristine, tmp_path, "two")
    spans = entry_spans(directory)
    for path, pos, _ in (spans[1], spans[-2]):
        raw = bytearray(path.read_bytes())
        raw[pos + HEADER.size + 1] ^= 0xFF
        path.write_bytes(bytes(raw))
    [report] = inspect_log(directory, {})
    assert [(s.offset, s.resumes, s.reason) for s in report.spots] == [
        (10, 20, "checksum mismatch"),
        ((len(spans) - 2) * ROWS, (len(spans) - 1) * ROWS, "checksum mismatch"),
    ]
    assert not report.sound
