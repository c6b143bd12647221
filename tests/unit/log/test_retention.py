import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from headwater.log.memory import MemoryLog
from headwater.log.retention import RetentionClock, trim_point


@given(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 1000)), min_size=1, max_size=20),
    st.integers(0, 20_000),
    st.integers(0, 5_000),
    st.lists(st.integers(0, 1000), max_size=4),
)
def test_never_trims_past_a_consumer_or_younger_than_retention(
    marks, now, retention, consumers
) -> None:  # type: ignore[no-untyped-def]
    marks = sorted(marks)
    cut = trim_point(marks, now, retention, consumers)
    assert all(cut <= c for c in consumers)
    old_enough = [off for t, off in marks if t <= now - retention]
    assert cut <= (max(old_enough) if old_enough else 0) or not consumers


def test_clock_marks_at_most_once_per_interval() -> None:
    clock = RetentionClock(every_ms=1000)
    for t in range(0, 5000, 100):
        clock.mark("t", t, t)
    assert [m[0] for m in clock.marks["t"]] == [0, 1000, 2000, 3000, 4000]
    clock.forget_before("t", 2500)
    assert clock.marks["t"][0] == (2000, 2000)


def test_trim_on_a_log_keeps_everything_consumers_need() -> None:
    log = MemoryLog()
    for i in range(10):
        log.append_blocking("a.b", pa.record_batch({"x": list(range(i * 10, i * 10 + 10))}))
    log.trim("a.b", trim_point([(0, 50)], 10_000, 1_000, consumers=[30]))
    assert log.start_offset("a.b") <= 30
    assert log.read("a.b", 30, 5)[0].batch.column("x")[0].as_py() == 30
