"""Dense group ids for rows of Arrow columns, and list columns rebuilt from pairs.

``group_rows`` numbers the distinct key tuples of a table 0..n-1 in order of first
appearance (NULL is a key value like any other, as in SQL GROUP BY). Every aggregate
kernel then works on numpy arrays indexed by these ids.

>>> g = group_rows([pa.array(["a", "b", "a", None])])
>>> g.ids.tolist(), g.count, g.first.tolist()
([0, 1, 0, 2], 3, [0, 1, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

I64 = npt.NDArray[np.int64]
ArrayLike: TypeAlias = pa.Array | pa.ChunkedArray


@dataclass(frozen=True, slots=True)
class Groups:
    ids: I64  # group id of each row
    count: int  # number of groups
    first: I64  # row index of each group's first row


def as_array(values: ArrayLike) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return values


def _codes(values: ArrayLike) -> tuple[I64, int]:
    encoded = pc.dictionary_encode(as_array(values), null_encoding="encode")
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def _dense(codes: I64) -> tuple[I64, int]:
    encoded = pc.dictionary_encode(pa.array(codes, pa.int64()))
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), len(encoded.dictionary)


def group_rows(columns: Sequence[ArrayLike], num_rows: int | None = None) -> Groups:
    """Number the distinct tuples of ``columns`` (all of one length)."""
    n = num_rows if num_rows is not None else (len(columns[0]) if columns else 0)
    if not columns:
        ids = np.zeros(n, dtype=np.int64)
        return Groups(ids, 1 if n else 0, np.zeros(1 if n else 0, dtype=np.int64))
    ids, card = _codes(columns[0])
    dense = True  # ids are 0..card-1 in order of first appearance
    for column in columns[1:]:
        codes, size = _codes(column)
        if size == 1:  # one value (e.g. the one pane of a batch) splits no group
            continue
        if card * size >= 2**62:
            ids, card = _dense(ids)
        ids = ids * size + codes
        card *= size
        dense = False
    ids, count = (ids, card) if dense else _dense(ids)
    running = np.maximum.accumulate(ids) if n else ids
    first = np.flatnonzero(np.diff(running, prepend=-1) > 0)
    return Groups(ids, count, first.astype(np.int64))


def regroup(ids: I64, values: pa.Array, count: int) -> pa.ListArray:
    """A list column of ``count`` rows: row g holds ``values[i]`` for every ``ids[i] == g``.

    >>> regroup(np.array([1, 0, 1]), pa.array([10, 20, 30]), 3).to_pylist()
    [[20], [10, 30], []]
    """
    sizes = np.bincount(ids, minlength=count)
    offsets = np.zeros(count + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    if len(ids) > 1 and not (ids[1:] >= ids[:-1]).all():
        values = values.take(pa.array(np.argsort(ids, kind="stable")))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def flatten(lists: ArrayLike) -> tuple[I64, pa.Array]:
    """(parent row, value) for every element of a list column."""
    arr = as_array(lists)
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    return parents, as_array(pc.list_flatten(arr))
