"""Mergeable aggregate kernels over group ids.

A kernel turns argument columns into a *state* (a few Arrow columns, one row per
group), merges states (again one row per group), and finalizes a state into the
aggregate's value. ``partial`` and ``merge`` are vectorized over every group at once;
there is no Python loop per row or per group.

>>> from headwater.engine.aggregates.groups import group_rows
>>> k = make_kernel("avg", [pa.float64()])
>>> g = group_rows([pa.array(["a", "b", "a"])])
>>> state = k.partial([pa.array([1.0, 5.0, 3.0])], g)
>>> k.final(state).to_pylist()
[2.0, 5.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.aggregates.groups import Groups, as_array, flatten, regroup
from headwater.engine.aggregates.int128 import WIDE, exact_int64_sums, floats, group_sums
from headwater.engine.plan import AggFunc

Arrays = Sequence[pa.Array | pa.ChunkedArray]
NUMERIC_ONLY = (
    "sum",
    "avg",
    "var_samp",
    "var_pop",
    "stddev_samp",
    "stddev_pop",
    "approx_quantile",
    "quantile_cont",
)
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]


class Kernel(Protocol):
    output_type: pa.DataType

    def state_types(self) -> list[pa.DataType]: ...

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]: ...

    def merge(self, states: Arrays, groups: Groups) -> list[pa.Array]: ...

    def final(self, states: Arrays) -> pa.Array: ...


def is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def numeric(values: pa.Array | pa.ChunkedArray, as_float: bool = False) -> tuple[np.ndarray, Mask]:
    """(values with NULL as 0, validity) as int64 or float64 numpy arrays."""
    arr = as_array(values)
    integer = pa.types.is_integer(arr.type) and not as_float
    target = pa.int64() if integer else pa.float64()
    if arr.type != target:
        # integers past 2**53 round to the nearest double, as in DuckDB's casts
        arr = arr.cast(target, safe=integer)
    valid = np.ones(len(arr), dtype=bool)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        arr = pc.fill_null(arr, 0)
    return arr.to_numpy(zero_copy_only=False), valid


def sum_by(ids: npt.NDArray[np.int64], values: np.ndarray, count: int) -> np.ndarray:
    """Per-group sums: exact for int64 (counts), float64 otherwise."""
    if values.dtype == np.int64:
        return exact_int64_sums(ids, values, count)
    return np.bincount(ids, weights=values, minlength=count)


def counts(ids: npt.NDArray[np.int64], valid: Mask | None, count: int) -> npt.NDArray[np.int64]:
    picked = ids if valid is None else ids[valid]
    return np.bincount(picked, minlength=count).astype(np.int64)


class CountStar:
    output_type = pa.int64()

    def state_types(self) -> list[pa.DataType]:
        return [pa.int64()]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        return [pa.array(counts(groups.ids, None, groups.count))]

    def merge(self, states: Arrays, groups: Groups) -> list[pa.Array]:
        values, _ = numeric(states[0])
        return [pa.array(sum_by(groups.ids, values, groups.count))]

    def final(self, states: Arrays) -> pa.Array:
        return as_array(states[0])


class Count(CountStar):
    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        arr = as_array(args[0])
        valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
        return [pa.array(counts(groups.ids, valid, groups.count))]


class Sum:
    """Float sums in float64; integer sums exact, as DuckDB's HUGEINT (see ``int128``)."""

    def __init__(self, arg: pa.DataType) -> None:
        self.output_type = WIDE if pa.types.is_integer(arg) else pa.float64()

    def state_types(self) -> list[pa.DataType]:
        return [self.output_type]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        if self.output_type == WIDE:
            total, n = group_sums(groups.ids, args[0], groups.count)
            return [total.to_arrow(n == 0)]
        values, valid = numeric(args[0], as_float=True)
        ids = groups.ids[valid]
        floats = sum_by(ids, values[valid], groups.count)
        empty = counts(ids, None, groups.count) == 0
        return [pa.array(floats, type=self.output_type, mask=empty)]

    merge = partial

    def final(self, states: Arrays) -> pa.Array:
        return as_array(states[0])


class Extreme:
    """min / max: numpy for numbers, Arrow's hash aggregate for anything orderable."""

    def __init__(self, arg: pa.DataType, op: str) -> None:
        self.output_type = arg
        self.op = op

    def state_types(self) -> list[pa.DataType]:
        return [self.output_type]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        t = self.output_type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            return [self._numpy(args[0], groups)]
        table = pa.table({"g": groups.ids, "v": as_array(args[0])})
        out = table.group_by("g", use_threads=False).aggregate([("v", self.op)])
        order = np.argsort(out["g"].to_numpy())
        return [as_array(out[f"v_{self.op}"]).take(pa.array(order))]

    def _numpy(self, arg: pa.Array | pa.ChunkedArray, groups: Groups) -> pa.Array:
        values, valid = numeric(arg)
        ids = groups.ids[valid]
        start: float = np.inf if self.op == "min" else -np.inf
        if values.dtype == np.int64:
            info = np.iinfo(np.int64)
            start = info.max if self.op == "min" else info.min
        out = np.full(groups.count, start, dtype=values.dtype)
        (np.fmin if self.op == "min" else np.fmax).at(out, ids, values[valid])
        empty = counts(ids, None, groups.count) == 0
        return pa.array(out, mask=empty).cast(self.output_type)

    merge = partial

    def final(self, states: Arrays) -> pa.Array:
        return as_array(states[0])


class Avg:
    """sum / count; over integers the sum is exact (as DuckDB's), rounded once at the end."""

    output_type = pa.float64()

    def __init__(self, arg: pa.DataType) -> None:
        self.sum_type = WIDE if pa.types.is_integer(arg) else pa.float64()

    def state_types(self) -> list[pa.DataType]:
        return [self.sum_type, pa.int64()]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        if self.sum_type == WIDE:
            total, n = group_sums(groups.ids, args[0], groups.count)
            return [total.to_arrow(np.zeros(groups.count, dtype=bool)), pa.array(n)]
        values, valid = numeric(args[0], as_float=True)
        ids = groups.ids[valid]
        return [
            pa.array(sum_by(ids, values[valid], groups.count)),
            pa.array(counts(ids, None, groups.count)),
        ]

    def merge(self, states: Arrays, groups: Groups) -> list[pa.Array]:
        n, _ = numeric(states[1])
        counted = pa.array(sum_by(groups.ids, n, groups.count))
        if self.sum_type == WIDE:
            total, _ = group_sums(groups.ids, states[0], groups.count)
            return [total.to_arrow(np.zeros(groups.count, dtype=bool)), counted]
        floats, _ = numeric(states[0], as_float=True)
        return [pa.array(sum_by(groups.ids, floats, groups.count)), counted]

    def final(self, states: Arrays) -> pa.Array:
        if self.sum_type == WIDE:
            total = floats(states[0])
        else:
            total, _ = numeric(states[0], as_float=True)
        n, _ = numeric(states[1])
        with np.errstate(invalid="ignore", divide="ignore"):
            return pa.array(total / np.maximum(n, 1), mask=n == 0)


class Moments:
    """Variance and standard deviation from (n, mean, M2), merged with Chan's formula."""

    output_type = pa.float64()

    def __init__(self, func: AggFunc) -> None:
        self.sample = func in ("var_samp", "stddev_samp")
        self.root = func in ("stddev_samp", "stddev_pop")

    def state_types(self) -> list[pa.DataType]:
        return [pa.int64(), pa.float64(), pa.float64()]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        values, valid = numeric(args[0], as_float=True)
        ids, x = groups.ids[valid], values[valid]
        n = counts(ids, None, groups.count)
        mean = np.bincount(ids, weights=x, minlength=groups.count) / np.maximum(n, 1)
        m2 = np.bincount(ids, weights=(x - mean[ids]) ** 2, minlength=groups.count)
        return [pa.array(n), pa.array(mean), pa.array(m2)]

    def merge(self, states: Arrays, groups: Groups) -> list[pa.Array]:
        n, _ = numeric(states[0])
        mean, _ = numeric(states[1], as_float=True)
        m2, _ = numeric(states[2], as_float=True)
        ids, c = groups.ids, groups.count
        total = np.bincount(ids, weights=n, minlength=c)
        grand = np.bincount(ids, weights=n * mean, minlength=c) / np.maximum(total, 1)
        spread = np.bincount(ids, weights=m2 + n * (mean - grand[ids]) ** 2, minlength=c)
        return [pa.array(total.astype(np.int64)), pa.array(grand), pa.array(spread)]

    def final(self, states: Arrays) -> pa.Array:
        n, _ = numeric(states[0])
        m2, _ = numeric(states[2], as_float=True)
        dof = n - 1 if self.sample else n
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.maximum(m2, 0.0) / np.maximum(dof, 1)
        if self.root:
            out = np.sqrt(out)
        return pa.array(out, mask=dof <= 0)


class CountDistinct:
    """Exact: the state is the list of distinct values per group."""

    output_type = pa.int64()

    def __init__(self, arg: pa.DataType) -> None:
        self.arg = arg

    def state_types(self) -> list[pa.DataType]:
        return [pa.list_(self.arg)]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        return [_distinct(groups.ids, as_array(args[0]), groups.count)]

    def merge(self, states: Arrays, groups: Groups) -> list[pa.Array]:
        parents, values = flatten(states[0])
        return [_distinct(groups.ids[parents], values, groups.count)]

    def final(self, states: Arrays) -> pa.Array:
        return pc.list_value_length(as_array(states[0])).cast(pa.int64())


def _distinct(ids: npt.NDArray[np.int64], values: pa.Array, count: int) -> pa.Array:
    encoded = pc.dictionary_encode(values)
    codes = encoded.indices
    valid = codes.is_valid().to_numpy(zero_copy_only=False)
    size = max(len(encoded.dictionary), 1)
    codes_np = pc.fill_null(codes, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = np.unique(ids[valid] * size + codes_np[valid])
    return regroup(pairs // size, encoded.dictionary.take(pa.array(pairs % size)), count)


class ArgBy:
    """arg_min / arg_max: the value at the smallest / largest ordering value."""

    def __init__(self, value: pa.DataType, order: pa.DataType, op: str) -> None:
        self.output_type = value
        self.order_type = order
        self.direction = "ascending" if op == "min" else "descending"

    def state_types(self) -> list[pa.DataType]:
        return [self.output_type, self.order_type]

    def partial(self, args: Arrays, groups: Groups) -> list[pa.Array]:
        value, order = as_array(args[0]), as_array(args[1])
        valid = pc.and_(value.is_valid(), order.is_valid()).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(valid)
        table = pa.table({"g": groups.ids[rows], "o": order.take(pa.array(rows))})
        sorted_idx = pc.sort_indices(table, [("g", "ascending"), ("o", self.direction)])
        best = rows[sorted_idx.to_numpy()]
        g = groups.ids[best]
        head = np.r_[True, g[1:] != g[:-1]] if len(g) else np.zeros(0, dtype=bool)
        pick = np.full(groups.count, 0, dtype=np.int64)
        pick[g[head]] = best[head]
        missing = np.ones(groups.count, dtype=bool)
        missing[g[head]] = False
        take = pa.array(pick, mask=missing)
        return [value.take(take), order.take(take)]

    merge = partial

    def final(self, states: Arrays) -> pa.Array:
        return as_array(states[0])


def make_kernel(func: AggFunc, args: list[pa.DataType], param: float | None = None) -> Kernel:
    """The kernel of ``func`` for argument types ``args``; ``TypeError`` if they don't fit."""
    from headwater.engine.aggregates.quantiles import Quantile
    from headwater.engine.aggregates.sketches import HyperLogLog

    if func in NUMERIC_ONLY and not is_numeric(args[0]):
        raise TypeError(f"{func} needs a number, not {args[0]}; cast the argument")
    if func in ("min", "max") and pa.types.is_nested(args[0]):
        raise TypeError(f"{func} cannot order {args[0]} values")
    if func == "count_star":
        return CountStar()
    if func == "count":
        return Count()
    if func == "sum":
        return Sum(args[0])
    if func in ("min", "max"):
        return Extreme(args[0], func)
    if func == "avg":
        return Avg(args[0])
    if func in ("var_samp", "var_pop", "stddev_samp", "stddev_pop"):
        return Moments(func)
    if func == "count_distinct":
        return CountDistinct(args[0])
    if func == "approx_count_distinct":
        return HyperLogLog()
    if func in ("approx_quantile", "quantile_cont"):
        q = 0.5 if param is None else param
        return Quantile(q, "hazen" if func == "approx_quantile" else "linear")
    return ArgBy(args[0], args[1], "min" if func == "arg_min" else "max")
