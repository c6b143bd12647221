"""A blocked Bloom filter of 64-bit id hashes, in a memory-mapped file.

It answers "certainly never seen" for most new ids without touching the disk; a "maybe"
is confirmed against the exact sets (``headwater.ingest.dedup``), so a false positive
costs a lookup, never a wrong answer. Each id sets ``K`` bits inside one 64-bit word
(one cache line touched per id), all vectorized with numpy. Its size is fixed by
configuration, not by history: past its design load only the false-positive rate
grows. The file needs no fsync of its own: bits lost in a crash belong to ids that the
start adds again from the log tail.

Why not a library: ``rbloom`` checks one Python object per call and persists only with a
Python-level hash function; this one takes a whole numpy batch per call and lives in a
file that a start maps without reading.

>>> f = IdFilter(None, 1024)
>>> h = np.array([1, 2, 3], np.uint64) * np.uint64(0x9E3779B97F4A7C15)
>>> f.add(h[:2]); f.might_contain(h).tolist()
[True, True, False]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

K = 4  # bits per id: the low 6 bits of each of the hash's 4 low bytes
_ONE = np.uint64(1)
_HIGH = np.uint64(32)


class IdFilter:
    """Bloom filter over ``nbytes`` (rounded to 8); in ``path`` if given, else in memory."""

    def __init__(self, path: Path | None, nbytes: int) -> None:
        words = min(max(nbytes // 8, 1), 1 << 32)  # up to 32 GiB
        self.fresh = False  # True when the file was (re)created: it holds no ids yet
        self._mapped: np.memmap | None = None
        if path is None:
            self.words: np.ndarray = np.zeros(words, np.uint64)
            return
        if not path.exists() or path.stat().st_size != words * 8:
            with open(path, "wb") as fh:
                fh.truncate(words * 8)
            self.fresh = True
        self._mapped = np.memmap(path, np.uint64, "r+", shape=(words,))
        # A plain view: indexing a np.memmap goes through a slow Python-level __getitem__.
        self.words = self._mapped.view(np.ndarray)

    def _where(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # The word from the high 32 bits (multiply-shift: no division), the bits from the
        # low ones: a few whole-array operations, whatever K is.
        idx = ((h >> _HIGH) * np.uint64(self.words.size)) >> _HIGH
        low = h.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)[:, :K] & np.uint8(63)
        mask = np.bitwise_or.reduce(_ONE << low.astype(np.uint64), axis=1)
        return idx.astype(np.int64), mask

    def add(self, hashes: np.ndarray) -> None:
        if hashes.size == 0:
            return
        idx, mask = self._where(hashes)
        ordered = np.sort(idx)
        if (ordered[1:] == ordered[:-1]).any():  # two ids share a word: rare, slower
            np.bitwise_or.at(self.words, idx, mask)
        else:
            self.words[idx] |= mask

    def might_contain(self, hashes: np.ndarray) -> np.ndarray:
        idx, mask = self._where(hashes)
        return np.asarray((self.words[idx] & mask) == mask)

    def flush(self) -> None:
        if self._mapped is not None:
            self._mapped.flush()
