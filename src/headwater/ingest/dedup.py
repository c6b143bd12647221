"""Event-id dedup: a set of 64-bit id hashes, checked and extended a whole batch at a time.

Ids are hashed vectorized (numpy, stable across versions); the set is a sorted ``uint64``
array plus a small unsorted tail, so membership is ``searchsorted`` over the batch
(8 bytes per remembered id, no per-row Python).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_P = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> np.uint64(31)))


def _powers(base: np.uint64, n: int) -> np.ndarray:
    out = np.full(n, base, dtype=np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def hash_ids(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Stable 64-bit hashes of string or integer ids; nulls hash to 0 ('no id').

    Vectorized: a polynomial hash over the string bytes (prefix sums, normalized by
    the inverse power of each string's start), then a splitmix64 finalizer.

    >>> h = hash_ids(pa.array(["a", "b", None, "a"]))
    >>> bool(h[0] == h[3]), bool(h[0] != h[1]), int(h[2])
    (True, True, 0)
    """
    arr = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    n = len(arr)
    valid = (
        np.ones(n, dtype=bool)
        if arr.null_count == 0
        else np.asarray(arr.is_valid().to_numpy(zero_copy_only=False))
    )
    with np.errstate(over="ignore"):
        if pa.types.is_integer(arr.type):
            values = arr.cast(pa.int64()).fill_null(0).to_numpy().view(np.uint64)
            h = _splitmix64(values ^ np.uint64(0x5BD1E995))
        else:
            arr = arr.cast(pa.large_string())
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[
                arr.offset : arr.offset + n + 1
            ]
            data_buf = arr.buffers()[2]
            data = (
                np.frombuffer(data_buf, dtype=np.uint8)
                if data_buf is not None
                else np.zeros(0, np.uint8)
            )
            total = int(offsets[-1]) if n else 0
            sums = np.zeros(total + 1, dtype=np.uint64)
            if total:
                np.cumsum(data[:total].astype(np.uint64) * _powers(_P, total), out=sums[1:])
            starts, ends = offsets[:-1], offsets[1:]
            raw = (sums[ends] - sums[starts]) * _powers(_P_INV, total + 1)[starts]
            lengths = (ends - starts).astype(np.uint64)
            h = _splitmix64(raw ^ (lengths * np.uint64(0x9E3779B97F4A7C15)))
    h[h == 0] = 1
    h[~valid] = 0
    return h


class IdIndex:
    """Remembered id hashes of one stream."""

    def __init__(self, hashes: np.ndarray | None = None) -> None:
        self._sorted = np.unique(hashes) if hashes is not None else np.empty(0, np.uint64)
        self._tail: list[np.ndarray] = []
        self._tail_len = 0

    def __len__(self) -> int:
        self._compact()
        return int(self._sorted.size)

    def seen(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask: which hashes are already remembered."""
        mask = self._in_sorted(hashes)
        if self._tail_len:
            mask |= np.isin(hashes, np.concatenate(self._tail))
        return mask

    def first_unseen(self, hashes: np.ndarray) -> np.ndarray:
        """Mask of rows to keep: not remembered, and first of their id within the batch."""
        _, first_idx = np.unique(hashes, return_index=True)
        first = np.zeros(hashes.size, dtype=bool)
        first[first_idx] = True
        return np.asarray(first & ~self.seen(hashes))

    def add(self, hashes: np.ndarray) -> None:
        if hashes.size == 0:
            return
        self._tail.append(hashes.astype(np.uint64, copy=False))
        self._tail_len += hashes.size
        if self._tail_len > max(65_536, self._sorted.size // 8):
            self._compact()

    def discard(self, hashes: np.ndarray) -> None:
        """Forget hashes (an append that reserved them failed)."""
        self._compact()
        self._sorted = np.setdiff1d(self._sorted, hashes, assume_unique=False)

    def _compact(self) -> None:
        if self._tail_len:
            self._sorted = np.union1d(self._sorted, np.concatenate(self._tail))
            self._tail = []
            self._tail_len = 0

    def _in_sorted(self, hashes: np.ndarray) -> np.ndarray:
        if self._sorted.size == 0:
            return np.zeros(hashes.size, dtype=bool)
        pos = np.searchsorted(self._sorted, hashes)
        pos[pos >= self._sorted.size] = 0
        return np.asarray(self._sorted[pos] == hashes)
