"""The read-selection rule both embedded adapters share, and MemoryLog specifics."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from headwater.log.memory import MemoryLog, entry_range


def test_entry_range_takes_whole_entries_up_to_max_rows() -> None:
    starts, end = [0, 10, 20, 30], 40
    assert entry_range(starts, end, 0, 100) == range(0, 4)
    assert entry_range(starts, end, 0, 20) == range(0, 2)
    assert entry_range(starts, end, 15, 15) == range(1, 3)  # 5 rows of entry 1, then 10
    assert entry_range(starts, end, 15, 14) == range(1, 2)
    assert entry_range(starts, end, 35, 1) == range(3, 4)
    assert entry_range(starts, end, 40, 10) == range(0)
    assert entry_range([50, 60], 70, 0, 5) == range(0, 1)  # below start: from the start


@given(st.lists(st.integers(1, 50), min_size=1, max_size=30), st.data())
def test_entry_range_never_overshoots_after_the_first_entry(
    sizes: list[int], data: st.DataObject
) -> None:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    end = sum(sizes)
    offset = data.draw(st.integers(0, end - 1))
    max_rows = data.draw(st.integers(1, 200))
    picked = entry_range(starts, end, offset, max_rows)
    assert picked.start <= picked.stop - 1
    assert (
        starts[picked.start]
        <= offset
        < (starts[picked.start + 1] if picked.start + 1 < len(starts) else end)
    )
    got = (starts[picked.stop] if picked.stop < len(starts) else end) - offset
    first = (starts[picked.start + 1] if picked.start + 1 < len(starts) else end) - offset
    assert got <= max(max_rows, first)
    if picked.stop < len(starts):  # stopped early: the next entry would not fit
        assert got + sizes[picked.stop] > max_rows or got >= max_rows


def test_memory_log_trim_drops_only_entries_wholly_below() -> None:
    log = MemoryLog()
    for _ in range(4):
        log.append_blocking("t.s", pa.record_batch({"x": list(range(10))}))
    log.trim("t.s", 25)
    assert log.start_offset("t.s") == 20
    log.trim("t.s", 100)
    assert log.start_offset("t.s") == 40 == log.end_offset("t.s")
    assert log.read("t.s", 0) == []
