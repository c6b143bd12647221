"""Event-id dedup: which 64-bit id hashes a stream has seen, checked a batch at a time.

Ids are hashed vectorized (numpy, stable across versions). The index is exact — a row is
called a duplicate only when its id hash is certainly remembered — and bounded:

- a **filter** (``IdFilter``, fixed size) answers "never seen" for most new ids;
- a **hot** part in memory holds the ids of recent appends, in generations of at most
  ``spill_ids`` ids (Python sets: a membership test per filter hit is all they serve);
- a **cold** part on disk (``IdRuns``) holds the ids of every older log entry, written
  by ``IdSpiller`` from the log itself, never from memory, so an append that failed
  never reaches it. A hot generation is dropped once its appends are settled and the
  runs cover the log past them.

A filter hit is confirmed in the hot sets, then in the runs. A start maps the runs and
the filter and reads only the log past ``covered``: its time does not grow with history.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from headwater.ingest.idfilter import IdFilter
from headwater.ingest.idruns import IdRuns

_P = np.uint64(0x100000001B3)  # odd, so it has an inverse modulo 2**64
_P_INV = np.uint64(pow(0x100000001B3, -1, 2**64))


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.asarray(x ^ (x >> np.uint64(31)))


_POWERS: dict[int, np.ndarray] = {}
_POWERS_CACHED = 1 << 20  # a table of at most 8 MiB per base; longer bodies compute theirs


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """``base**0 .. base**(n-1)`` modulo 2**64, from a table that grows by doubling."""
    table = _POWERS.get(int(base))
    if table is None or table.size < n:
        size = max(4096, 1 << (n - 1).bit_length())
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        table = np.cumprod(table, dtype=np.uint64)
        if size <= _POWERS_CACHED:
            _POWERS[int(base)] = table
    return table[:n]


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
            width: type[np.signedinteger[Any]] = np.int32  # string: 32-bit offsets, as they are
            if not pa.types.is_string(arr.type):
                arr, width = arr.cast(pa.large_string()), np.int64
            offsets = np.frombuffer(arr.buffers()[1], dtype=width)[
                arr.offset : arr.offset + n + 1
            ].astype(np.int64, copy=False)
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


@dataclass(eq=False)
class _Generation:
    ids: set[int] = field(default_factory=set)
    pending: list[np.ndarray] = field(default_factory=list)  # not yet put in ``ids``
    size: int = 0
    inflight: int = 0  # reservations whose append has not settled
    end: int = 0  # highest log end offset of its settled appends

    def lookup(self) -> set[int]:
        """The generation's ids as a set; built lazily, as only filter hits need it."""
        if self.pending:
            for part in self.pending:
                self.ids.update(part.tolist())
            self.pending = []
        return self.ids


class Reservation:
    """Ids taken for one append: ``settle`` once it is durable, ``release`` if it failed."""

    __slots__ = ("_gen", "_hashes", "_index")

    def __init__(self, index: IdIndex, gen: _Generation, hashes: np.ndarray) -> None:
        self._index, self._gen, self._hashes = index, gen, hashes

    def settle(self, end_offset: int) -> None:
        with self._index.lock:
            self._gen.inflight -= 1
            self._gen.end = max(self._gen.end, end_offset)

    def release(self) -> None:
        with self._index.lock:
            self._gen.inflight -= 1
        self._index.discard(self._hashes)


class IdIndex:
    """Remembered id hashes of one stream (see the module docstring).

    Without ``runs`` (unit tests, in-memory platforms) everything stays hot.
    """

    def __init__(
        self,
        runs: IdRuns | None = None,
        filter_: IdFilter | None = None,
        *,
        spill_ids: int = 262_144,
        hot_max_ids: int = 2_000_000,
    ) -> None:
        self.runs = runs
        self.filter = filter_
        self.spill_ids = spill_ids
        self.hot_max_ids = hot_max_ids
        self.lock = threading.Lock()
        self._gens: list[_Generation] = [_Generation()]

    @classmethod
    def on_disk(
        cls, directory: Path, filter_bytes: int, *, spill_ids: int, hot_max_ids: int
    ) -> IdIndex:
        """The index kept in ``directory``: its runs, and its filter (refilled if new)."""
        runs = IdRuns(directory)
        filter_ = IdFilter(directory / "filter.bits", filter_bytes)
        if filter_.fresh:  # new, or resized by the settings: it must hold every run's ids
            for run in runs.iter_all():
                for i in range(0, run.size, 1 << 20):
                    filter_.add(np.asarray(run[i : i + (1 << 20)]))
        return cls(runs, filter_, spill_ids=spill_ids, hot_max_ids=hot_max_ids)

    def __len__(self) -> int:
        return self.hot_ids() + (len(self.runs) if self.runs is not None else 0)

    def hot_ids(self) -> int:
        return sum(g.size for g in self._gens)

    def full(self) -> bool:
        """Too many ids wait in memory for the spiller: take no more for now."""
        return self.runs is not None and self.hot_ids() >= self.hot_max_ids

    def seen(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask: which hashes are remembered. Exact."""
        if self.filter is not None:
            maybe = np.flatnonzero(self.filter.might_contain(hashes))
        else:
            maybe = np.arange(hashes.size)
        mask = np.zeros(hashes.size, dtype=bool)
        if maybe.size == 0:
            return mask
        candidates = hashes[maybe]
        with self.lock:
            sets = [g.lookup() for g in self._gens]
        values = candidates.tolist()
        hit = np.fromiter((any(v in s for s in sets) for v in values), bool, len(values))
        if self.runs is not None and not hit.all():
            rest = np.flatnonzero(~hit)
            hit[rest] = self.runs.contains(candidates[rest])
        mask[maybe] = hit
        return mask

    def first_unseen(self, hashes: np.ndarray) -> np.ndarray:
        """Mask of rows to keep: not remembered, and first of their id within the batch."""
        ordered = np.sort(hashes)
        if not (ordered[1:] == ordered[:-1]).any():  # no id twice in the batch: the usual case
            return np.asarray(~self.seen(hashes))
        _, first_idx = np.unique(hashes, return_index=True)
        first = np.zeros(hashes.size, dtype=bool)
        first[first_idx] = True
        return np.asarray(first & ~self.seen(hashes))

    def reserve(self, hashes: np.ndarray) -> Reservation:
        """Remember ``hashes`` (non-zero, unseen) for an append about to be written."""
        hashes = hashes.astype(np.uint64, copy=False)
        if self.filter is not None:
            self.filter.add(hashes)
        with self.lock:
            gen = self._gens[-1]
            if self.runs is not None and gen.size >= self.spill_ids:
                gen = _Generation()
                self._gens.append(gen)
            gen.pending.append(hashes)
            gen.size += hashes.size
            gen.inflight += 1
        return Reservation(self, gen, hashes)

    def add(self, hashes: np.ndarray, end_offset: int = 0) -> None:
        """Remember ids of entries already in the log (a start reading the log tail)."""
        if hashes.size:
            self.reserve(hashes).settle(end_offset)

    def discard(self, hashes: np.ndarray) -> None:
        """Forget hashes (an append that reserved them failed)."""
        values = hashes.tolist()
        with self.lock:
            for g in self._gens:
                ids = g.lookup()
                before = len(ids)
                ids.difference_update(values)
                g.size -= before - len(ids)

    # ------------------------------------------------------------ the spiller's side

    def spill_due(self) -> int | None:
        """The log end a spill must reach, when the oldest full generation has settled."""
        with self.lock:
            if self.runs is None or len(self._gens) < 2 or self._gens[0].inflight:
                return None
            return self._gens[0].end

    def spilled(self, covered: int) -> None:
        """The runs now cover the log below ``covered``: drop the generations they hold."""
        with self.lock:
            while len(self._gens) > 1 and not self._gens[0].inflight:
                if self._gens[0].end > covered:
                    break
                self._gens.pop(0)
