"""Quantiles: exact while a group holds few values, a KLL sketch beyond.

``approx_quantile(x, q)``, ``quantile_cont(x, q)`` and ``median(x)``.

**Up to ``EXACT_LIMIT`` (512) values** in a group, the state is the values themselves and
the answer is exact. With the values sorted, x[0] <= ... <= x[n-1], the answer is the
linear interpolation at position ``p`` between x[floor(p)] and x[ceil(p)]:

- ``approx_quantile``: p = clamp(q n - 1/2, 0, n - 1), the rule DuckDB's
  ``approx_quantile`` (a t-digest) follows while it holds every value as its own
  centroid, i.e. for up to ~100 values; [1, 2] answers 1.5 at q = 0.5 and 1 at q = 0.25;
- ``quantile_cont`` and ``median``: p = q (n - 1), DuckDB's exact ``quantile_cont``.

**Beyond 512 values** the group's values go into a KLL sketch (Apache DataSketches,
``kll_doubles_sketch`` with k = 400): mergeable, about 9 KB per group, and it answers
with a value of the group whose normalized rank is within 0.68% of q with 99%
confidence (``kll_doubles_sketch.get_normalized_rank_error(400, False)``); q = 0 and
q = 1 answer the exact minimum and maximum. Either way the answer lies within
[min, max] of the group. NaN and infinities are skipped, as NULL is.

State per group: ``n`` (values seen), ``values`` (the values while exact, unsorted) and
``sketch`` (the serialized KLL sketch once past the limit, else NULL). Building and
merging the lists is vectorized; only groups past the limit go through the sketch, one
call per group (each holding more than 512 values).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import kll_doubles_sketch

from headwater.engine.aggregates.groups import Groups, as_array, flatten, regroup
from headwater.engine.aggregates.kernels import Arrays, numeric

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Method = Literal["hazen", "linear"]

EXACT_LIMIT = 512
KLL_K = 400  # k = 200 would halve the size for twice the rank error
RANK_ERROR = kll_doubles_sketch.get_normalized_rank_error(KLL_K, False)


class Quantile:
    """``approx_quantile`` (``method='hazen'``) or ``quantile_cont`` (``'linear'``)."""

    output_type = pa.float64()

    def __init__(self, q: float, method: Method = "hazen") -> None:
        self.q = q
        self.method = method

    def state_types(self) -> list[pa.DataType]:
        return [pa.int64(), pa.list_(pa.float64()), pa.binary()]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        values, valid = numeric(args[0], as_float=True)
        valid &= np.isfinite(values)
        return _state(groups.ids[valid], values[valid], Sketches.none(), groups.count)

    def merge(self, states: Arrays, groups: Groups) -> list[pa.Array]:
        lists = as_array(states[1])
        sizes = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
        sizes = sizes.astype(np.int64)
        sketches = Sketches.of(states[0], states[2], groups.ids)
        n = np.bincount(groups.ids, weights=sizes, minlength=groups.count).astype(np.int64)
        big = _big(n, sketches)
        to_sketch = big[groups.ids]
        merged = _concat(lists, sizes, groups.ids, ~to_sketch, groups.count)
        if not big.any():
            return [pa.array(n), merged, pa.nulls(groups.count, pa.binary())]
        parents, values = flatten(lists)
        loose = to_sketch[parents]
        raw = values.to_numpy(zero_copy_only=False).astype(np.float64)[loose]
        column = _sketch_column(big, groups.ids[parents][loose], raw, sketches)
        return [pa.array(n), merged, column]

    def final(self, states: Arrays) -> pa.Array:
        n, _ = numeric(states[0])
        lists = as_array(states[1])
        out = self._exact(lists)
        blobs = as_array(states[2])
        for row in np.flatnonzero(blobs.is_valid().to_numpy(zero_copy_only=False)):
            out[row] = self._estimate(kll_doubles_sketch.deserialize(blobs[int(row)].as_py()))
        return pa.array(out, mask=n == 0)

    def _exact(self, lists: pa.Array) -> F64:
        """Each list's quantile (NaN for empty lists), all at once."""
        parents, values = flatten(lists)
        x = _sorted_within(parents, values.to_numpy(zero_copy_only=False).astype(np.float64))
        sizes = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        n = sizes.astype(np.float64)
        if self.method == "hazen":
            pos = np.clip(self.q * n - 0.5, 0.0, np.maximum(n - 1, 0))
        else:
            pos = self.q * np.maximum(n - 1, 0)
        low = np.floor(pos)
        at_low = offsets + low.astype(np.int64)
        at_high = offsets + np.ceil(pos).astype(np.int64)
        out = np.full(len(sizes), np.nan)
        some = sizes > 0
        lo, hi = x[at_low[some]], x[at_high[some]]
        with np.errstate(over="ignore", invalid="ignore"):
            answer = lo + (pos[some] - low[some]) * (hi - lo)
        out[some] = np.clip(answer, lo, hi)  # no rounding (or overflow) past its neighbours
        return out

    def _estimate(self, sketch: kll_doubles_sketch) -> float:
        low, high = sketch.get_min_value(), sketch.get_max_value()
        if self.q <= 0.0:
            return float(low)
        if self.q >= 1.0:
            return float(high)
        return float(min(max(sketch.get_quantile(self.q), low), high))


def _sorted_within(parents: I64, x: F64) -> F64:
    """``x`` sorted within each run of equal ``parents`` (which ascend): one float sort for
    the ranks, then one sort of (parent, rank) packed in an int64 (3x ``np.lexsort``)."""
    order = np.argsort(x)
    rank = np.empty(len(x), dtype=np.int64)
    rank[order] = np.arange(len(x), dtype=np.int64)
    packed = np.sort((parents << 32) | rank)
    positions: I64 = packed & 0xFFFFFFFF
    return np.asarray(x[order][positions], dtype=np.float64)


class Sketches:
    """The serialized sketches among some state rows: their group ids, bytes and counts."""

    def __init__(self, ids: I64, blobs: pa.Array, counts: I64) -> None:
        self.ids, self.blobs, self.counts = ids, blobs, counts

    @classmethod
    def none(cls) -> Sketches:
        return cls(np.empty(0, np.int64), pa.array([], pa.binary()), np.empty(0, np.int64))

    @classmethod
    def of(
        cls, n: pa.Array | pa.ChunkedArray, blobs: pa.Array | pa.ChunkedArray, ids: I64
    ) -> Sketches:
        column = as_array(blobs)
        rows = np.flatnonzero(column.is_valid().to_numpy(zero_copy_only=False))
        if not len(rows):
            return cls.none()
        counts, _ = numeric(as_array(n).take(pa.array(rows)))
        return cls(ids[rows], column.take(pa.array(rows)), counts)


def _state(ids: I64, values: F64, sketches: Sketches, count: int) -> list[pa.Array]:
    """The state of ``count`` groups from loose values and serialized sketches."""
    n = np.bincount(ids, minlength=count).astype(np.int64)
    big = _big(n, sketches)
    small = ~big[ids]
    ids_small, values_small = ids[small], values[small]
    order = np.argsort(ids_small)  # the order inside a list does not matter: not stable
    lists = regroup(ids_small[order], pa.array(values_small[order], pa.float64()), count)
    if not big.any():
        return [pa.array(n), lists, pa.nulls(count, pa.binary())]
    return [pa.array(n), lists, _sketch_column(big, ids[~small], values[~small], sketches)]


def _big(n: I64, sketches: Sketches) -> npt.NDArray[np.bool_]:
    """Which groups hold a sketch: those with one already, and those past the limit.
    Adds the sketches' counts to ``n``."""
    np.add.at(n, sketches.ids, sketches.counts)
    big: npt.NDArray[np.bool_] = n > EXACT_LIMIT
    big[sketches.ids] = True
    return big


def _concat(
    lists: pa.Array, sizes: I64, groups: I64, keep: npt.NDArray[np.bool_], count: int
) -> pa.Array:
    """The lists of the ``keep`` rows concatenated per group, moved in one scatter (a sort
    of the rows, none of the values)."""
    kept = np.where(keep, sizes, 0)
    order = np.argsort(groups, kind="stable")
    start = np.empty(len(groups), dtype=np.int64)
    start[order] = np.cumsum(kept[order]) - kept[order]  # where each row's values go
    offsets = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(groups, weights=kept, minlength=count).astype(np.int64), out=offsets[1:])
    parents, values = flatten(lists)
    x = values.to_numpy(zero_copy_only=False).astype(np.float64)
    within = np.arange(len(x), dtype=np.int64) - (np.cumsum(sizes) - sizes)[parents]
    moving = keep[parents]
    out = np.empty(int(offsets[-1]), dtype=np.float64)
    out[start[parents[moving]] + within[moving]] = x[moving]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(out))


def _sketch_column(
    big: npt.NDArray[np.bool_], ids: I64, values: F64, sketches: Sketches
) -> pa.Array:
    """The sketch column: one serialized sketch per ``big`` group, NULL elsewhere."""
    blobs = _sketch_groups(np.flatnonzero(big), ids, values, sketches)
    where = np.zeros(len(big), dtype=np.int64)
    where[big] = np.arange(int(big.sum()))
    return pa.array(blobs, pa.binary()).take(pa.array(where, mask=~big))


def _sketch_groups(groups: I64, ids: I64, values: F64, sketches: Sketches) -> list[bytes]:
    """One serialized sketch per group in ``groups`` (sorted): its sketches merged, its
    loose values added."""
    order = np.argsort(ids, kind="stable")
    ids, values = ids[order], values[order]
    edges = np.append(groups, groups[-1] + 1)
    value_bounds = np.searchsorted(ids, edges)
    sketch_order = np.argsort(sketches.ids, kind="stable")
    sketch_bounds = np.searchsorted(sketches.ids[sketch_order], edges)
    out: list[bytes] = []
    for i in range(len(groups)):
        merged = kll_doubles_sketch(KLL_K)
        for j in sketch_order[sketch_bounds[i] : sketch_bounds[i + 1]]:
            merged.merge(kll_doubles_sketch.deserialize(sketches.blobs[int(j)].as_py()))
        loose = values[value_bounds[i] : value_bounds[i + 1]]
        if len(loose):
            merged.update(np.ascontiguousarray(loose))
        out.append(bytes(merged.serialize()))
    return out


def upgrade(columns: list[pa.ChunkedArray]) -> list[pa.Array]:
    """Quantile state saved by earlier versions, in today's form.

    Those kept log buckets (bucket ids and counts, 1% relative accuracy): each bucket
    becomes its representative value, repeated by its count.
    """
    if len(columns) != 2:
        return [as_array(c) for c in columns]
    parents, keys = flatten(columns[0])
    _, weights = flatten(columns[1])
    repeat = weights.to_numpy(zero_copy_only=False).astype(np.int64)
    values = np.repeat(_bucket_values(keys.to_numpy(zero_copy_only=False).astype(np.int64)), repeat)
    rows = len(as_array(columns[0]))
    return _state(np.repeat(parents, repeat), values, Sketches.none(), rows)


def _bucket_values(keys: I64) -> F64:
    gamma = 1.01 / 0.99
    index = np.abs(keys) - 40_000
    magnitude = 2.0 * np.exp(index * math.log(gamma)) / (gamma + 1.0)
    return np.where(keys == 0, 0.0, np.sign(keys) * magnitude)
