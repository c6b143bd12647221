"""Exact per-group sums of integers, as DuckDB's ``sum`` gives them (HUGEINT).

An integer sum can pass the int64 range (2**62 + 2**62), so sums are kept as 128-bit
integers and travel as Arrow ``decimal128(38, 0)``, the type DuckDB hands HUGEINT over
in. Each value is the pair of 64-bit words ``high * 2**64 + low`` (``low`` unsigned),
which is also the little-endian layout of a decimal128 buffer, so reading and writing
Arrow columns is a reinterpretation, not a per-value conversion.

The sums themselves stay in numpy. The common case costs what an int64 sum costs: when
``max |value| * rows`` is below 2**53 the sums are ``np.bincount`` over float64 weights,
which is exact there; below 2**63 they are ``np.add.at`` over int64. Only beyond that
does a sum split each value into 32-bit limbs (exact in int64 for fewer than 2**31
rows per batch) and carry between them.

>>> ids = np.array([0, 0, 1])
>>> total, n = group_sums(ids, pa.array([2**62, 2**62, -5]), 2)
>>> total.to_arrow(n == 0).to_pylist()
[Decimal('9223372036854775808'), Decimal('-5')]
>>> total.to_float().tolist()
[9.223372036854776e+18, -5.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
F64 = npt.NDArray[np.float64]
Mask = npt.NDArray[np.bool_]

WIDE = pa.decimal128(38, 0)
EXACT_IN_FLOAT = 2**53
LIMB = np.uint64(0xFFFFFFFF)
# |value| < 10**38 (DECIMAL(38)) is sure when -HIGH_LIMIT <= high < HIGH_LIMIT
HIGH_LIMIT = 10**38 >> 64


@dataclass(frozen=True, slots=True)
class Int128:
    """128-bit integers: ``high * 2**64 + low``."""

    high: I64
    low: U64

    @classmethod
    def of(cls, values: I64) -> Int128:
        return cls(values >> 63, values.view(np.uint64))

    def to_arrow(self, null: Mask) -> pa.Array:
        """A ``decimal128(38, 0)`` column, NULL where ``null``."""
        n = len(self.low)
        if n and not (self.high.min() >= -HIGH_LIMIT and self.high.max() < HIGH_LIMIT):
            raise OverflowError("an integer sum passed the DECIMAL(38) range (about 1e38)")
        words = np.empty((n, 2), dtype=np.int64)
        words[:, 0] = self.low.view(np.int64)
        words[:, 1] = self.high
        nulls = int(np.count_nonzero(null))
        validity = pa.py_buffer(np.packbits(~null, bitorder="little")) if nulls else None
        return pa.Array.from_buffers(WIDE, n, [validity, pa.py_buffer(words)], null_count=nulls)

    def to_float(self) -> F64:
        """The nearest float64 of each value (to within 2 ulp)."""
        small = self.low.view(np.int64)
        fits = self.high == (small >> 63)
        wide = self.high.astype(np.float64) * 2.0**64 + self.low.astype(np.float64)
        return np.where(fits, small.astype(np.float64), wide)


def read(column: pa.Array | pa.ChunkedArray) -> tuple[I64 | Int128, Mask | None]:
    """(values, validity or None when there are no NULLs) of an integer or
    ``decimal128(38, 0)`` column; NULLs read as 0. Values that all fit in int64 come
    as int64."""
    arr = as_array(column)
    valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
    if pa.types.is_decimal(arr.type):
        return _words(arr, valid), valid
    if valid is not None:
        arr = arr.fill_null(0)
    values = arr.to_numpy(zero_copy_only=False)
    if values.dtype == np.uint64 and len(values) and values.max() >= 2**63:
        return Int128(np.zeros(len(values), dtype=np.int64), values), valid
    return values.astype(np.int64, copy=False), valid


def _words(arr: pa.Array, valid: Mask | None) -> I64 | Int128:
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    words = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=2 * (arr.offset + n))
    words = words[2 * arr.offset :].reshape(n, 2)
    low, high = words[:, 0], words[:, 1]
    if valid is not None:  # a NULL slot's words are not defined
        low, high = np.where(valid, low, 0), np.where(valid, high, 0)
    top, bottom = int(high.max()), int(high.min())
    if (top, bottom) == (0, 0) and low.min() >= 0:
        return np.ascontiguousarray(low)
    if (top, bottom) == (-1, -1) and low.max() < 0:
        return np.ascontiguousarray(low)
    if top <= 0 and bottom >= -1 and (high == (low >> 63)).all():
        return np.ascontiguousarray(low)
    return Int128(np.ascontiguousarray(high), np.ascontiguousarray(low).view(np.uint64))


def floats(column: pa.Array | pa.ChunkedArray) -> F64:
    """An integer or ``decimal128(38, 0)`` column as float64 (NULL as 0)."""
    values, _ = read(column)
    return values.astype(np.float64) if isinstance(values, np.ndarray) else values.to_float()


def group_sums(ids: I64, column: pa.Array | pa.ChunkedArray, count: int) -> tuple[Int128, I64]:
    """Per-group exact sums of a column's non-NULL values, and how many there were."""
    values, valid = read(column)
    n = np.bincount(ids if valid is None else ids[valid], minlength=count).astype(np.int64)
    if isinstance(values, np.ndarray):
        small = _int64_sums(ids, values, count)
        if small is not None:
            return Int128.of(small), n
        values = Int128.of(values)
    return _limb_sums(ids, values, count), n


def _int64_sums(ids: I64, values: I64, count: int) -> I64 | None:
    """Sums in int64 when no partial sum can overflow it; None otherwise."""
    if len(values) == 0:
        return np.zeros(count, dtype=np.int64)
    bound = max(-int(values.min()), int(values.max())) * len(values)
    if bound < EXACT_IN_FLOAT:
        return np.bincount(ids, weights=values, minlength=count).astype(np.int64)
    if bound < 2**63:
        out = np.zeros(count, dtype=np.int64)
        np.add.at(out, ids, values)
        return out
    return None


def _limb_sums(ids: I64, values: Int128, count: int) -> Int128:
    """Sums of 32-bit limbs (each exact in int64), then the carries between them."""
    low = exact_int64_sums(ids, (values.low & LIMB).astype(np.int64), count)
    mid = exact_int64_sums(ids, (values.low >> np.uint64(32)).astype(np.int64), count)
    high = exact_int64_sums(ids, values.high, count)
    mid += low >> 32
    high += mid >> 32
    words = ((mid & 0xFFFFFFFF) << 32) | (low & 0xFFFFFFFF)
    return Int128(high, words.view(np.uint64))


def exact_int64_sums(ids: I64, values: I64, count: int) -> I64:
    """Per-group int64 sums (counts, limbs); ``OverflowError`` rather than wrapping."""
    small = _int64_sums(ids, values, count)
    if small is None:
        raise OverflowError("a sum of int64 values passed the int64 range")
    return small
