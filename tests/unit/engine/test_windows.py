import numpy as np

from headwater.engine.plan import WindowSpec
from headwater.engine.watermark import END_OF_TIME, NO_WATERMARK, Watermark
from headwater.engine.windows import (
    assign,
    closed_through,
    floor_to,
    late_windows,
    open_rows,
    pane_width,
    session_late,
    sessionize,
    windows_to_close,
)
from headwater.model.time import ManualClock

TUMBLE = WindowSpec("tumble", "ts", size_ms=60_000, slide_ms=60_000)
HOP = WindowSpec("hop", "ts", size_ms=60_000, slide_ms=20_000)
ODD_HOP = WindowSpec("hop", "ts", size_ms=50_000, slide_ms=20_000)


def ms(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_floor_is_towards_minus_infinity() -> None:
    assert floor_to(ms(0, 59_999, 60_000, -1), 60_000).tolist() == [0, 0, 60_000, -60_000]


def test_tumble_one_window_per_row() -> None:
    rows, starts = assign(ms(0, 59_999, 60_000, 125_000), TUMBLE)
    assert rows.tolist() == [0, 1, 2, 3]
    assert starts.tolist() == [0, 0, 60_000, 120_000]


def test_hop_size_over_slide_windows_per_row() -> None:
    rows, starts = assign(ms(65_000, 0), HOP)
    assert rows.tolist() == [0, 0, 0, 1, 1, 1]
    assert starts.tolist() == [20_000, 40_000, 60_000, -40_000, -20_000, 0]
    # size not a multiple of slide: 2 or 3 windows, each containing the row
    rows, starts = assign(ms(45_000, 5_000), ODD_HOP)
    for r, s in zip(rows.tolist(), starts.tolist(), strict=True):
        t = [45_000, 5_000][r]
        assert s <= t < s + 50_000 and s % 20_000 == 0
    assert pane_width(ODD_HOP) == 10_000


def test_window_closes_when_watermark_reaches_end_plus_lateness() -> None:
    assert closed_through(TUMBLE, 59_999, 0) < 0
    assert closed_through(TUMBLE, 60_000, 0) == 0
    assert closed_through(TUMBLE, 69_999, 10_000) < 0
    assert closed_through(TUMBLE, 70_000, 10_000) == 0


def test_late_rows_are_returned_per_closed_window() -> None:
    ts = ms(10_000, 59_000, 61_000)
    rows, starts = late_windows(ts, TUMBLE, watermark_ms=60_000, lateness_ms=0)
    assert rows.tolist() == [0, 1] and starts.tolist() == [0, 0]
    assert open_rows(ts, TUMBLE, 60_000, 0).tolist() == [False, False, True]
    # within allowed lateness: not late yet
    rows, _ = late_windows(ts, TUMBLE, watermark_ms=60_000, lateness_ms=1)
    assert rows.tolist() == []
    # hop: late for the closed windows only, still counted in the open one
    rows, starts = late_windows(ms(65_000), HOP, watermark_ms=110_000, lateness_ms=0)
    assert starts.tolist() == [20_000, 40_000]
    assert open_rows(ms(65_000), HOP, 110_000, 0).tolist() == [True]


def test_windows_to_close_in_start_order_once() -> None:
    panes = ms(0, 20_000, 40_000, 60_000)
    first = windows_to_close(panes, HOP, watermark_ms=80_000, lateness_ms=0, after=None)
    assert first.tolist() == [-40_000, -20_000, 0, 20_000]
    again = windows_to_close(panes, HOP, watermark_ms=100_000, lateness_ms=0, after=20_000)
    assert again.tolist() == [40_000]


def test_sessions_merge_within_gap_and_bridge() -> None:
    groups = ms(0, 0, 0, 1, 0)
    ts = ms(0, 5, 30, 0, 18)
    ids, count = sessionize(groups, ts, ts, gap_ms=10)
    # 0, 5 | 18? 18 - 5 = 13 >= 10: new | 30 - 18 = 12: new ; key 1 alone
    assert count == 4
    assert ids[0] == ids[1] and len({ids[2], ids[4], ids[0]}) == 3
    # an open session [0, 5] and a new row at 12 bridge with a session [20, 25]
    ids, count = sessionize(ms(0, 0, 0), ms(0, 20, 12), ms(5, 25, 12), gap_ms=10)
    assert count == 1
    # an interval that spans later points keeps them in its session
    ids, count = sessionize(ms(0, 0, 0), ms(0, 50, 140), ms(100, 50, 140), gap_ms=30)
    assert ids.tolist() == [0, 0, 1]


def test_events_exactly_a_gap_apart_share_a_session() -> None:
    """Flink's rule: windows [t, t + gap) and [t + gap, ...) touch, so they merge."""
    ids, count = sessionize(ms(0, 0), ms(0, 10), ms(0, 10), gap_ms=10)
    assert count == 1 and ids.tolist() == [0, 0]
    ids, count = sessionize(ms(0, 0), ms(0, 11), ms(0, 11), gap_ms=10)
    assert count == 2
    # an open session [0, 5] and a row exactly a gap after its end
    assert sessionize(ms(0, 0), ms(0, 15), ms(5, 15), gap_ms=10)[1] == 1


def test_session_late_rule() -> None:
    assert session_late(ms(89, 90, 91), watermark_ms=100, lateness_ms=10).tolist() == [
        True,
        False,
        False,
    ]


def test_watermark_is_max_minus_delay_and_monotonic() -> None:
    clock = ManualClock(0)
    w = Watermark(delay_ms=5_000)
    assert w.watermark_ms == NO_WATERMARK and not w.known
    w = w.observe(100_000, clock.now_ms())
    assert w.watermark_ms == 95_000
    w = w.observe(50_000, clock.now_ms())
    assert w.watermark_ms == 95_000
    w = w.observe(None, clock.now_ms())
    assert w.watermark_ms == 95_000
    assert w.finish().watermark_ms == END_OF_TIME


def test_idle_timeout_advances_with_processing_time() -> None:
    clock = ManualClock(1_000_000)
    w = Watermark(delay_ms=0, idle_timeout_ms=10_000).observe(60_000, clock.now_ms())
    clock.advance(9_999)
    assert w.on_time(clock.now_ms()).watermark_ms == 60_000
    clock.advance(1)
    assert w.on_time(clock.now_ms()).watermark_ms == 70_000
    clock.advance(5_000)
    w = w.on_time(clock.now_ms())
    assert w.watermark_ms == 75_000
    # new rows restart the idle clock; the watermark never goes back
    w = w.observe(61_000, clock.now_ms())
    assert w.watermark_ms == 75_000
    clock.advance(10_000)
    assert w.on_time(clock.now_ms()).watermark_ms == 85_000
    # without idle_timeout, processing time alone never moves it
    plain = Watermark().observe(60_000, 0)
    assert plain.on_time(10**12).watermark_ms == 60_000


def test_watermark_state_round_trip() -> None:
    w = Watermark(delay_ms=3).observe(10, 7)
    assert Watermark(delay_ms=3).with_state(w.to_dict()) == w
