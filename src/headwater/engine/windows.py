"""Event-time windows over int64 millisecond arrays: assignment, lateness, closing.

All functions are pure and vectorized (numpy), never a loop per row.

Tumbling and hopping windows are epoch-aligned: window ``[s, s + size)`` with ``s`` a
multiple of ``slide`` (``slide == size`` for tumble). State is kept per *pane* of width
``gcd(size, slide)``: every row lies in exactly one pane and every window is a run of
whole panes, so a hop window of 60 slides never copies a row 60 times.

The lateness rules, with ``L`` = allowed lateness and ``wm`` = the watermark reached
before the batch:

- tumble/hop: window ``[s, e)`` *closes* once ``e + L <= wm``; with emit='final' it is
  emitted then, exactly once. A row is late *for a window* iff that window is closed;
  a hop row may be late for some of its windows and count in the others.
- session: a row is late iff ``ts < wm - L``. This is the rule under which a late row can
  never touch a session already emitted (sessions close when ``last + gap + L < wm``:
  a row at exactly ``last + gap`` still joins, see ``sessionize``).

>>> spec = WindowSpec("hop", "ts", size_ms=60_000, slide_ms=20_000)
>>> rows, starts = assign(np.array([65_000]), spec)
>>> starts.tolist()
[20000, 40000, 60000]
>>> late_windows(np.array([65_000]), spec, watermark_ms=110_000, lateness_ms=0)[1].tolist()
[20000, 40000]
"""

from __future__ import annotations

import itertools
from math import gcd

import numpy as np
import numpy.typing as npt

from headwater.engine.plan import WindowSpec

I64 = npt.NDArray[np.int64]


def floor_to(values: I64, step: int) -> I64:
    """Round down to a multiple of ``step`` (towards -inf, also before 1970)."""
    return values - np.mod(values, step)


def pane_width(spec: WindowSpec) -> int:
    return gcd(spec.size_ms, spec.slide_ms)


def pane_windows(panes: I64, spec: WindowSpec) -> tuple[I64, I64]:
    """First and last start of the windows that contain each pane (or each timestamp)."""
    last = floor_to(panes, spec.slide_ms)
    first = floor_to(panes - spec.size_ms, spec.slide_ms) + spec.slide_ms
    return first, last


def assign(ts: I64, spec: WindowSpec) -> tuple[I64, I64]:
    """Every (row index, window start) pair: one per row for tumble, size/slide for hop."""
    first, last = pane_windows(ts, spec)
    counts = (last - first) // spec.slide_ms + 1
    rows = np.repeat(np.arange(len(ts), dtype=np.int64), counts)
    offsets = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, np.repeat(first, counts) + offsets * spec.slide_ms


def closed_through(spec: WindowSpec, watermark_ms: int, lateness_ms: int) -> int:
    """The start of the last closed window: ``s`` is closed iff ``s + size + L <= wm``."""
    return int(floor_to(np.array([watermark_ms - spec.size_ms - lateness_ms]), spec.slide_ms)[0])


def late_windows(ts: I64, spec: WindowSpec, watermark_ms: int, lateness_ms: int) -> tuple[I64, I64]:
    """(row index, window start) for every closed window a row falls in."""
    first, last = pane_windows(ts, spec)
    last_closed = np.minimum(last, closed_through(spec, watermark_ms, lateness_ms))
    counts = np.maximum((last_closed - first) // spec.slide_ms + 1, 0)
    rows = np.repeat(np.arange(len(ts), dtype=np.int64), counts)
    offsets = np.arange(len(rows), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, np.repeat(first, counts) + offsets * spec.slide_ms


def open_rows(
    ts: I64, spec: WindowSpec, watermark_ms: int, lateness_ms: int
) -> npt.NDArray[np.bool_]:
    """Rows with at least one window still open (they go into state)."""
    _, last = pane_windows(ts, spec)
    return np.asarray(last > closed_through(spec, watermark_ms, lateness_ms))


def windows_to_close(
    panes: I64, spec: WindowSpec, watermark_ms: int, lateness_ms: int, after: int | None
) -> I64:
    """Starts of windows holding any of ``panes`` that are closed and start after ``after``.

    Sorted ascending: windows close in start order as the watermark moves.
    """
    if len(panes) == 0:
        return np.empty(0, dtype=np.int64)
    _, starts = assign(np.asarray(panes, dtype=np.int64), spec)
    top = closed_through(spec, watermark_ms, lateness_ms)
    keep = starts <= top
    if after is not None:
        keep &= starts > after
    return np.unique(starts[keep])


def session_late(ts: I64, watermark_ms: int, lateness_ms: int) -> npt.NDArray[np.bool_]:
    """Session rows behind ``watermark - lateness`` (see the module docstring)."""
    return np.asarray(ts < watermark_ms - lateness_ms)


def sessionize(groups: I64, starts: I64, ends: I64, gap_ms: int) -> tuple[I64, int]:
    """Merge intervals ``[start, end]`` of the same group into sessions.

    Two intervals share a session when the later one starts at most ``gap_ms`` after
    everything before it in its group has ended (rows are intervals with start == end).
    This is Flink's rule: an event at ``t`` opens the window ``[t, t + gap)``, and windows
    merge when they intersect, their bounds included, so events exactly ``gap`` apart
    share a session. Returns a session id per interval (ordered by group, then time)
    and the count.

    >>> sessionize(np.array([0, 0, 0, 1]), np.array([0, 10, 21, 0]), np.array([0, 10, 21, 0]), 10)
    (array([0, 0, 1, 2]), 3)
    """
    n = len(groups)
    if n == 0:
        return np.empty(0, dtype=np.int64), 0
    order = np.lexsort((starts, groups))
    g, s, e = groups[order], starts[order], ends[order]
    reach = _segmented_cummax(g, e)
    new = np.ones(n, dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (s[1:] - reach[:-1] > gap_ms)
    ids_sorted = np.cumsum(new) - 1
    ids = np.empty(n, dtype=np.int64)
    ids[order] = ids_sorted
    return ids, int(ids_sorted[-1]) + 1


def _segmented_cummax(groups: I64, values: I64) -> I64:
    """Running max of ``values`` restarting at each new group (groups are sorted)."""
    low = int(values.min())
    span = int(values.max()) - low + 1
    shifted = values - low
    if int(groups.max()) * span < 2**62:
        offset = groups * span
        return np.asarray(np.maximum.accumulate(shifted + offset) - offset + low, dtype=np.int64)
    out = np.empty_like(values)
    bounds = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1], True])
    for a, b in itertools.pairwise(bounds):
        out[a:b] = np.maximum.accumulate(values[a:b])
    return out
