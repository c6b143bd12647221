"""Vectorized arithmetic over rows grouped by key (segments), in event-time order.

Rows are sorted by (slot, time); a *segment* is the run of one slot. Everything here
is numpy over whole batches: no Python loop per row or per key.

>>> import numpy as np
>>> seg = Segments.of(np.array([1, 0, 1, 0]), np.array([10, 5, 20, 1]))
>>> seg.order.tolist(), seg.rank.tolist(), seg.slot.tolist()
([3, 1, 0, 2], [0, 1, 0, 1], [0, 0, 1, 1])
>>> exclusive_cumsum(np.array([1.0, 2.0, 3.0, 4.0]), seg).tolist()
[0.0, 1.0, 0.0, 3.0]
>>> recurrence(np.array([1.0, 1.0, 1.0, 1.0]), 0.5, 0.5, np.array([0.0, 0.0]), seg).tolist()
[0.5, 0.75, 0.5, 0.75]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
# exp(-600) is far from float64's smallest normal: blocks of rank stay exact enough
MAX_LOG_SPAN = 600.0


@dataclass(frozen=True, slots=True)
class Segments:
    order: I64  # batch row of each sorted position
    slot: I64  # slot of each sorted position
    rank: I64  # position within its segment
    start: I64  # sorted position where each position's segment starts

    @classmethod
    def of(cls, slots: I64, times: I64) -> Segments:
        if len(times) < 2 or bool((times[1:] >= times[:-1]).all()):  # in time order already
            small = slots.astype(np.uint16) if len(slots) and slots.max() < 65_536 else slots
            order = np.argsort(small, kind="stable").astype(np.int64)  # radix sort when small
        else:
            order = np.lexsort((times, slots)).astype(np.int64)
        slot = slots[order]
        n = len(slot)
        firsts = np.flatnonzero(np.r_[True, slot[1:] != slot[:-1]]) if n else np.empty(0, np.int64)
        lengths = np.diff(np.r_[firsts, n])
        start = np.repeat(firsts, lengths).astype(np.int64)
        rank = np.arange(n, dtype=np.int64) - start
        return cls(order, slot, rank, start)

    @property
    def last(self) -> npt.NDArray[np.bool_]:
        """Whether each sorted position is the last of its segment."""
        n = len(self.slot)
        return np.r_[self.slot[1:] != self.slot[:-1], True] if n else np.empty(0, bool)


def exclusive_cumsum(values: F64, seg: Segments) -> F64:
    """Per segment, the sum of the values before each position (sorted order)."""
    total = np.cumsum(values)
    before = total - values
    return before - before[seg.start]


def recurrence(u: F64, d: float, e: float, init: F64, seg: Segments) -> F64:
    """``y[t] = d * y[t-1] + e * u[t]`` per segment, ``y[-1] = init[slot]`` (sorted order).

    The first ``SHORT`` ranks step together over every segment (a numpy step per rank);
    a segment longer than that (one busy key in a batch) continues alone, in closed form
    over blocks short enough that ``d ** -rank`` stays finite:
    ``y[j] = d**(j+1) * y0 + e * d**j * sum(u[i] * d**-i, i <= j)``.
    """
    n = len(u)
    y = np.empty(n)
    if n == 0:
        return y
    prev = init[seg.slot[seg.rank == 0]].astype(np.float64)  # per segment, in order
    firsts = np.flatnonzero(seg.rank == 0)
    lengths = np.diff(np.r_[firsts, n])
    for r in range(min(SHORT, int(lengths.max()))):
        alive = lengths > r
        pos = firsts[alive] + r
        prev[alive] = d * prev[alive] + e * u[pos]
        y[pos] = prev[alive]
    for k in np.flatnonzero(lengths > SHORT):
        lo, hi = int(firsts[k]) + SHORT, int(firsts[k] + lengths[k])
        y[lo:hi] = _closed_form(u[lo:hi], d, e, float(prev[k]))
    return y


SHORT = 64


def _closed_form(u: F64, d: float, e: float, y0: float) -> F64:
    out = np.empty(len(u))
    if d <= 0.0:
        return e * u
    span = max(1, int(MAX_LOG_SPAN / max(-np.log(d), 1e-12)))
    for lo in range(0, len(u), span):
        part = u[lo : lo + span]
        j = np.arange(len(part), dtype=np.float64)
        out[lo : lo + span] = np.power(d, j + 1) * y0 + e * np.power(d, j) * np.cumsum(
            part * np.power(d, -j)
        )
        y0 = float(out[lo + len(part) - 1])
    return out
