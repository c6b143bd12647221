"""Per-key anomaly statistics over a batch, in event-time order, with their state.

Each function takes the batch's values sorted by (key slot, time) (``Segments``) and
the state of every key, and returns the per-row result plus the keys' new state:

- ``welford``: the key's running mean and deviation over its whole history *before*
  the row; ``z = (x - mean) / std``, null until ``warmup`` values were seen.
- ``ewm``: exponentially weighted mean and variance (``alpha`` = weight of the newest
  value): the smoothed value including the row, and the z-score of the row against
  the weighted mean and deviation *before* it.

Scores are z-scores; ``score01`` maps one to [0, 1) (two-sided normal probability).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from headwater.engine.anomaly.segments import F64, Segments, exclusive_cumsum, recurrence

# a constant history then a different value is an anomaly, not a division by zero
MIN_STD = 1e-9


@dataclass
class Stats:
    """State per key slot: count, mean, and M2 (Welford) or weighted variance (EWM)."""

    n: F64
    mean: F64
    var: F64

    @classmethod
    def empty(cls, size: int = 0) -> Stats:
        return cls(np.zeros(size), np.zeros(size), np.zeros(size))

    def grow(self, size: int) -> None:
        extra = size - len(self.n)
        if extra > 0:
            self.n = np.r_[self.n, np.zeros(extra)]
            self.mean = np.r_[self.mean, np.zeros(extra)]
            self.var = np.r_[self.var, np.zeros(extra)]


def _first_of_segment(x: F64, seg: Segments) -> F64:
    return x[seg.start]


def welford(x: F64, seg: Segments, st: Stats) -> tuple[F64, F64]:
    """(z-score, values seen before) of sorted values against each key's history before
    them; updates ``st``. The z-score is NaN with fewer than 2 values before."""
    slot = seg.slot
    n0 = st.n[slot]
    center = np.where(n0 > 0, st.mean[slot], _first_of_segment(x, seg))
    dev = x - center
    n_prev = n0 + seg.rank
    s_prev = exclusive_cumsum(dev, seg)  # sum of deviations from ``center`` before the row
    q_prev = st.var[slot] + exclusive_cumsum(dev * dev, seg)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_dev = s_prev / n_prev
        var = (q_prev - n_prev * mean_dev * mean_dev) / (n_prev - 1)
        std = np.sqrt(np.maximum(var, 0.0))
        floor = MIN_STD * np.maximum(1.0, np.abs(center + mean_dev))
        z = (dev - mean_dev) / np.maximum(std, floor)
    z[n_prev < 2] = np.nan
    last = seg.last
    ends, end_slot = np.flatnonzero(last), slot[last]
    total_n = n_prev[ends] + 1
    total_s = s_prev[ends] + dev[ends]
    total_q = q_prev[ends] + dev[ends] ** 2
    new_mean_dev = total_s / total_n
    st.mean[end_slot] = center[ends] + new_mean_dev
    st.var[end_slot] = total_q - total_n * new_mean_dev * new_mean_dev  # M2 around the mean
    st.n[end_slot] = total_n
    return z, n_prev


def ewm(x: F64, seg: Segments, st: Stats, alpha: float) -> tuple[F64, F64, F64]:
    """(smoothed value including the row, z-score before it, values seen before) of sorted
    values; updates ``st``. The z-score is NaN with fewer than 2 values before."""
    slot = seg.slot
    n0 = st.n[slot]
    first = _first_of_segment(x, seg)
    mean0 = np.where(st.n > 0, st.mean, 0.0)
    seeded = np.where(n0 > 0, st.mean[slot], first)  # a new key starts at its first value
    init = mean0.copy()
    init[slot[seg.rank == 0]] = seeded[seg.rank == 0]
    mean = recurrence(x, 1.0 - alpha, alpha, init, seg)
    mean_prev = np.where(seg.rank > 0, np.r_[0.0, mean[:-1]], seeded)
    dev = x - mean_prev
    var_init = np.where(st.n > 0, st.var, 0.0)
    var = recurrence(dev * dev, 1.0 - alpha, alpha * (1.0 - alpha), var_init, seg)
    var_prev = np.where(seg.rank > 0, np.r_[0.0, var[:-1]], var_init[slot])
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = MIN_STD * np.maximum(1.0, np.abs(mean_prev))
        z = dev / np.maximum(np.sqrt(np.maximum(var_prev, 0.0)), floor)
    n_prev = n0 + seg.rank
    z[n_prev < 2] = np.nan
    last = seg.last
    end_slot = slot[last]
    st.mean[end_slot] = mean[last]
    st.var[end_slot] = var[last]
    st.n[end_slot] = n_prev[last] + 1
    return mean, z, n_prev


def score01(z: F64) -> F64:
    """``erf(|z| / sqrt 2)``: 0 at the mean, 0.997 at 3 deviations (A&S 7.1.26, |err| < 2e-7)."""
    t = np.abs(z) / np.sqrt(2.0)
    k = 1.0 / (1.0 + 0.3275911 * t)
    poly = k * (
        0.254829592 + k * (-0.284496736 + k * (1.421413741 + k * (-1.453152027 + k * 1.061405429)))
    )
    out: F64 = 1.0 - poly * np.exp(-t * t)
    return out


def valid_mask(x: F64) -> npt.NDArray[np.bool_]:
    return ~np.isnan(x)
