"""A two-sided CUSUM change detector per key, for level shifts and drifts.

Each key keeps a reference (count, mean, M2 of its values since the detector last
restarted) and two cumulative sums of standardized deviations from it (Page's CUSUM)::

    u  = (x - mean) / std                      # against the reference before the row
    S+ = max(0, S+ + u - k)    S- = max(0, S- - u - k)

``k`` (the slack, in deviations) is how much drift is tolerated; the statistic
``max(S+, S-)`` crosses ``h`` when the values have moved away from the reference for
long enough — at once for a big shift, after a while for a slow drift. At that row the
detector raises an alarm and restarts: the reference is learned again from the next
``warmup`` values (during which the statistic is 0), so a series that shifted is
flagged once, at the change, and not for ever after as a whole-history z-score would.

Vectorized per batch without a loop per row. A first round takes every key from its
carried state up to its first alarm, on the sorted rows as they are: the reference from
cumulative sums, the CUSUM in closed form (``S_t = C_t - min(0, min_{j<=t} C_j)`` with
``C`` the cumulative increments, the running minimum taken rank by rank over all keys).
The keys that alarmed restart and go on in further rounds, laid out as a matrix (one
row per key, up to a horizon); usually few keys, few rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headwater.engine.anomaly.scores import MIN_STD
from headwater.engine.anomaly.segments import F64, I64, SHORT, Segments, exclusive_cumsum

HORIZON = 512  # values of a key per round at most (bounds the matrix of a skewed batch)


@dataclass
class CusumState:
    """State per key slot: the reference since the last restart (count, mean, M2) and
    the two sums."""

    n: F64
    mean: F64
    var: F64
    hi: F64
    lo: F64

    @classmethod
    def empty(cls, size: int = 0) -> CusumState:
        return cls(*(np.zeros(size) for _ in range(5)))

    def grow(self, size: int) -> None:
        extra = size - len(self.n)
        if extra > 0:
            for name in ("n", "mean", "var", "hi", "lo"):
                setattr(self, name, np.r_[getattr(self, name), np.zeros(extra)])

    def columns(self) -> dict[str, F64]:
        return {"n": self.n, "mean": self.mean, "var": self.var, "hi": self.hi, "lo": self.lo}


def cusum(
    x: F64, seg: Segments, st: CusumState, slack: float, h: float, warmup: int
) -> tuple[F64, F64]:
    """(statistic, values in the reference before the row) of values sorted by
    ``seg``; updates ``st``. The statistic is ``max(S+, S-)`` in deviations, the value
    before the restart on an alarm row (so ``statistic > h`` marks the alarms)."""
    n = len(x)
    stat, seen = np.zeros(n), np.zeros(n)
    if n == 0:
        return stat, seen
    firsts = np.flatnonzero(seg.rank == 0)
    ends = np.r_[firsts[1:], n]
    slots = seg.slot[firsts]
    state = [a[slots].copy() for a in (st.n, st.mean, st.var, st.hi, st.lo)]
    warm = max(warmup, 2)
    pos, active = _first_round(x, seg, firsts, ends, state, (slack, h, warm), stat, seen)
    while len(active):
        p, e = pos[active], ends[active]
        rem = e - p
        width = int(min(HORIZON, rem.max()))
        if width * len(rem) > 4 * rem.sum():  # a few long keys: leave them for later rounds
            width = int(min(width, max(8, np.quantile(rem, 0.9))))
        cols = np.arange(width)
        idx = p[:, None] + cols[None, :]
        valid = idx < e[:, None]
        xs = x[np.minimum(idx, n - 1)]
        sn, smean, svar, shi, slo = (s[active] for s in state)
        # the reference before each value (Welford via sums of deviations from a center)
        center = np.where(sn > 0, smean, xs[:, 0])[:, None]
        dev = np.where(valid, xs - center, 0.0)
        n_prev = sn[:, None] + cols[None, :]
        s_prev = np.cumsum(dev, axis=1) - dev
        q_prev = svar[:, None] + np.cumsum(dev * dev, axis=1) - dev * dev
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_dev = np.where(n_prev > 0, s_prev / n_prev, 0.0)
            var = (q_prev - n_prev * mean_dev * mean_dev) / (n_prev - 1)
            std = np.sqrt(np.maximum(var, 0.0))
            floor = MIN_STD * np.maximum(1.0, np.abs(center + mean_dev))
            u = (dev - mean_dev) / np.maximum(std, floor)
        ready = valid & (n_prev >= warm)
        u = np.where(ready, u, 0.0)
        up = _lindley(shi, np.where(ready, u - slack, -slack))
        down = _lindley(slo, np.where(ready, -u - slack, -slack))
        s = np.maximum(up, down)
        alarm = ready & (s > h)
        fired = alarm.any(axis=1)
        last = np.where(fired, alarm.argmax(axis=1), np.minimum(width, e - p) - 1)
        done = valid & (cols[None, :] <= last[:, None])
        at = idx[done]
        stat[at], seen[at] = s[done], n_prev[done]
        # the state after the last value taken: restarted on an alarm, carried otherwise
        r = np.arange(len(active))
        tot_n = n_prev[r, last] + 1
        tot_s = s_prev[r, last] + dev[r, last]
        tot_q = q_prev[r, last] + dev[r, last] ** 2
        new_mean = tot_s / tot_n
        keep = ~fired
        carried = (
            np.where(keep, tot_n, 0.0),
            np.where(keep, center[:, 0] + new_mean, 0.0),
            np.where(keep, tot_q - tot_n * new_mean * new_mean, 0.0),
            np.where(keep, up[r, last], 0.0),
            np.where(keep, down[r, last], 0.0),
        )
        for s_all, s_new in zip(state, carried, strict=True):
            s_all[active] = s_new
        pos[active] = p + last + 1
        active = active[pos[active] < e]
    for s_all, name in zip(state, ("n", "mean", "var", "hi", "lo"), strict=True):
        getattr(st, name)[slots] = s_all
    return stat, seen


def _first_round(
    x: F64, seg: Segments, firsts: I64, ends: I64, state: list[F64],
    params: tuple[float, float, int], stat: F64, seen: F64,
) -> tuple[I64, I64]:  # fmt: skip
    """Every key from its carried state up to its first alarm, on the sorted rows as they
    are (no matrix): the rounds that follow only take the keys that alarmed. Returns where
    each key stands and the keys still to go; ``state`` is updated."""
    slack, h, warm = params
    n = len(x)
    lengths = ends - firsts
    k = np.repeat(np.arange(len(firsts)), lengths)  # key (segment) of each row
    sn, smean, svar, shi, slo = state
    center = np.where(sn > 0, smean, x[firsts])[k]
    dev = x - center
    n_prev = sn[k] + seg.rank
    s_prev = exclusive_cumsum(dev, seg)
    q_prev = svar[k] + exclusive_cumsum(dev * dev, seg)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_dev = np.where(n_prev > 0, s_prev / n_prev, 0.0)
        var = (q_prev - n_prev * mean_dev * mean_dev) / (n_prev - 1)
        floor = MIN_STD * np.maximum(1.0, np.abs(center + mean_dev))
        u = (dev - mean_dev) / np.maximum(np.sqrt(np.maximum(var, 0.0)), floor)
    ready = n_prev >= warm
    u = np.where(ready, u, 0.0)
    up = _lindley_rows(shi, np.where(ready, u - slack, -slack), seg, k, firsts, lengths)
    down = _lindley_rows(slo, np.where(ready, -u - slack, -slack), seg, k, firsts, lengths)
    s = np.maximum(up, down)
    alarms = np.flatnonzero(ready & (s > h))
    fired, first = np.unique(k[alarms], return_index=True)
    last = ends - 1
    last[fired] = alarms[first]
    done = np.arange(n) <= last[k]
    stat[done], seen[done] = s[done], n_prev[done]
    tot_n = n_prev[last] + 1
    new_mean = (s_prev[last] + dev[last]) / tot_n
    keep = np.ones(len(firsts), dtype=bool)
    keep[fired] = False
    carried = (tot_n, center[last] + new_mean,
               q_prev[last] + dev[last] ** 2 - tot_n * new_mean * new_mean, up[last], down[last])  # fmt: skip
    for s_all, s_new in zip(state, carried, strict=True):
        s_all[:] = np.where(keep, s_new, 0.0)
    pos = last + 1
    return pos, fired[pos[fired] < ends[fired]]


def _lindley_rows(start: F64, steps: F64, seg: Segments, k: I64, firsts: I64, lengths: I64) -> F64:
    """``S_t = max(0, S_{t-1} + steps_t)`` per key over the sorted rows, from ``start``:
    the cumulative sums ``C`` less their running minimum (when below 0), the running
    minimum taken rank by rank over every key for the first ``SHORT`` ranks, then along
    each longer key alone."""
    c = start[k] + exclusive_cumsum(steps, seg) + steps
    low = np.empty_like(c)
    prev = np.full(len(firsts), np.inf)
    for r in range(min(SHORT, int(lengths.max()))):
        alive = np.flatnonzero(lengths > r)
        at = firsts[alive] + r
        prev[alive] = np.minimum(prev[alive], c[at])
        low[at] = prev[alive]
    for i in np.flatnonzero(lengths > SHORT):
        lo, hi = int(firsts[i]) + SHORT, int(firsts[i] + lengths[i])
        low[lo:hi] = np.minimum.accumulate(np.r_[prev[i], c[lo:hi]])[1:]
    out: F64 = c - np.minimum(0.0, low)
    return out


def _lindley(start: F64, steps: F64) -> F64:
    """``S_t = max(0, S_{t-1} + steps_t)`` along each matrix row, ``S_{-1} = start``."""
    c = start[:, None] + np.cumsum(steps, axis=1)
    out: F64 = c - np.minimum(0.0, np.minimum.accumulate(c, axis=1))
    return out
