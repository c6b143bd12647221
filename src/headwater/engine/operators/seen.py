"""The ids a DEDUP remembers: a hash table whose cost per batch follows the batch.

**Hashing.** ``id_hashes`` turns each id into two 64-bit words, ``(hash, check)``:

- integers, floats, booleans and times: their 64-bit value through splitmix64, a
  bijection, so distinct values never share a hash (``check`` is 1);
- strings and binaries: for each of two keys, a sum of splitmix64 over the 8-byte
  words of the value (each mixed with its position), then with the length. Two
  distinct values are taken for one only if both 64-bit words agree: about 2**-128
  per pair, so about 10**-20 with 10**9 ids remembered.

The words are saved in snapshots, so ``id_hashes`` must never change.

**Table.** Open addressing with linear probing over numpy arrays (``hash``, ``check``,
``ts``), at most half full. A lookup or insert of a batch probes all its ids at once,
one vectorized step per probe: about 1.5 slots per id, whatever the number remembered.
An id whose ``ts + horizon`` the watermark has passed counts as absent (and is renewed
in place if it comes again). Such ids are dropped by rebuilding the table, which costs
its capacity: when it would pass half full (the new one is at most a quarter full), or
to shrink it once half of the ids the last rebuild kept have expired. Either way a
rebuild follows at least as many inserts or expiries as a constant fraction of what it
scans, so the table work is O(1) per id. Once every id has expired the table is let go.

>>> seen = SeenIds(horizon_ms=10)
>>> h, c = id_hashes(pa.array(["a", "b"]))
>>> seen.first_seen(h, c, np.array([0, 5]), watermark_ms=0).tolist()
[True, True]
>>> seen.first_seen(h, c, np.array([7, 7]), watermark_ms=12).tolist()  # "a" expired at 10
[True, False]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Mask = npt.NDArray[np.bool_]

MIN_CAPACITY = 1024
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
KEYS = (np.uint64(0x243F6A8885A308D3), np.uint64(0x13198A2E03707344))  # digits of pi
STATE = pa.schema([("hash", pa.uint64()), ("check", pa.uint64()), ("ts", pa.int64())])


def _mix(x: U64) -> U64:
    """splitmix64 (a bijection of 64-bit words), into a new array."""
    x = x + GOLDEN
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def hashable(t: pa.DataType) -> bool:
    """Whether ``id_hashes`` takes ids of this type."""
    if pa.types.is_dictionary(t):
        return hashable(t.value_type)
    return bool(_fixed_width(t) or _bytes_like(t) or pa.types.is_decimal(t))


def _fixed_width(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or _time(t)
    )


def _time(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_timestamp(t)
        or pa.types.is_date(t)
        or pa.types.is_time(t)
        or pa.types.is_duration(t)
    )


def _bytes_like(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
    )


def id_hashes(ids: pa.Array | pa.ChunkedArray) -> tuple[U64, U64]:
    """``(hash, check)`` of each id (NULLs get some value: skip them).

    >>> h, c = id_hashes(pa.array([7, 7, 8]))
    >>> bool(h[0] == h[1]), bool(h[0] != h[2]), c.tolist()
    (True, True, [1, 1, 1])
    """
    arr = as_array(ids)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_decimal(arr.type):
        arr = arr.cast(pa.string())
    if _fixed_width(arr.type):
        words = _words64(arr)
        return _mix(words), np.ones(len(words), dtype=np.uint64)
    if _bytes_like(arr.type):
        return _bytes_hashes(arr)
    raise TypeError(f"cannot hash ids of type {arr.type}")


def _words64(arr: pa.Array) -> U64:
    t = arr.type
    if pa.types.is_floating(t):
        values = arr.cast(pa.float64()).fill_null(0.0).to_numpy(zero_copy_only=False) + 0.0
        return np.asarray(values.view(np.uint64))  # + 0.0 makes -0.0 into 0.0
    if _time(t):
        arr = arr.view(pa.int32() if t.bit_width == 32 else pa.int64())
    values = arr.cast(pa.int64(), safe=False).fill_null(0).to_numpy(zero_copy_only=False)
    return np.asarray(values.view(np.uint64))


def _bytes_hashes(arr: pa.Array) -> tuple[U64, U64]:
    """For key K: mix(sum over words k of mix(word_k ^ mix(k ^ K)) ^ mix(length ^ K)),
    words being the value's bytes in 8-byte little-endian words, the last zero-padded."""
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64, count=arr.offset + n + 1)
    offsets = offsets[arr.offset :]
    lengths = np.diff(offsets)
    words = (lengths + 7) >> 3
    # values with about as many words are hashed together, as columns of a 2-D array
    width = np.left_shift(1, np.ceil(np.log2(np.maximum(words, 1))).astype(np.int64))
    widest = int(width.max(initial=1))
    start, end = int(offsets[0]), int(offsets[-1])
    padded = np.zeros((end - start) // 8 + widest + 2, dtype=np.uint64)
    data = arr.buffers()[2]
    if data is not None and end > start:
        padded.view(np.uint8)[: end - start] = np.frombuffer(data, np.uint8, end - start, start)
    # the 8 bytes from each byte position on, as one (unaligned) word
    readable = np.lib.stride_tricks.as_strided(
        padded, shape=(len(padded) * 8 - 7,), strides=(1,), writeable=False
    )
    out = np.empty((2, n), dtype=np.uint64)
    for w in np.unique(width).tolist():
        rows = np.flatnonzero(width == w) if widest != int(width.min()) else slice(None)
        out[:, rows] = _hash_columns(readable, offsets[:-1][rows] - start, lengths[rows], w)
    return out[0], out[1] | np.uint64(1)


def _hash_columns(readable: U64, starts: I64, lengths: I64, width: int) -> U64:
    """The two words of values that have at most ``width`` 8-byte words each."""
    k = np.arange(width, dtype=np.int64)[:, None]
    words = readable[starts + 8 * k]  # (width, values)
    count = (lengths + 7) >> 3
    last = np.maximum(count - 1, 0)
    column = np.arange(len(starts))
    bits = (8 * (lengths - 8 * last)).astype(np.uint64)  # 1..64 bits of the last word
    keep = np.where(bits >= 64, ~np.uint64(0), (np.uint64(1) << (bits & np.uint64(63))) - 1)
    words[last, column] &= keep
    beyond = k >= count if (count != width).any() else None
    out = np.empty((2, len(starts)), dtype=np.uint64)
    for i, key in enumerate(KEYS):
        mixed = _mix(words ^ _mix(k.astype(np.uint64) ^ key))
        if beyond is not None:
            mixed[beyond] = 0
        out[i] = _mix(mixed.sum(axis=0, dtype=np.uint64) ^ _mix(lengths.astype(np.uint64) ^ key))
    return out


@dataclass
class Work:
    """Table slots touched so far: by lookups and inserts, and by rebuilds."""

    probes: int = 0
    rebuilt: int = 0


class SeenIds:
    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self.work = Work()
        self._allocate(MIN_CAPACITY)

    def _allocate(self, capacity: int) -> None:
        self.hash = np.zeros(capacity, dtype=np.uint64)
        self.check = np.zeros(capacity, dtype=np.uint64)  # 0: an empty slot
        self.ts = np.zeros(capacity, dtype=np.int64)
        self.used = 0  # ids held, expired ones included until the next rebuild
        self.newest: int | None = None  # the greatest ts held
        self.settled = 0  # ids kept by the last rebuild
        self.half_expired_at: int | None = None  # watermark when half of those expired

    @property
    def capacity(self) -> int:
        return len(self.hash)

    @property
    def nbytes(self) -> int:
        return int(self.hash.nbytes + self.check.nbytes + self.ts.nbytes)

    def first_seen(self, hash: U64, check: U64, ts: I64, watermark_ms: int) -> Mask:
        """Which of these distinct ids are new (or remembered past the horizon only);
        they are remembered from now on, at ``ts``."""
        slots = self._find(hash, check)
        found = slots >= 0
        expired = self.ts[slots[found]] <= watermark_ms - self.horizon_ms
        new = ~found
        new[found] = expired
        self.ts[slots[found][expired]] = ts[found][expired]
        self._insert(hash[~found], check[~found], ts[~found], watermark_ms)
        if new.any():
            top = int(ts[new].max())
            self.newest = top if self.newest is None else max(self.newest, top)
        return new

    def forget(self, watermark_ms: int) -> None:
        """Empty the table once every id in it has expired; shrink it once enough have."""
        if self.newest is not None and watermark_ms - self.horizon_ms >= self.newest:
            self._allocate(MIN_CAPACITY)
        elif (
            self.half_expired_at is not None
            and watermark_ms >= self.half_expired_at
            and _capacity_for(self.used - self.settled // 2) < self.capacity
        ):
            self._rebuild(0, watermark_ms)

    def live(self, watermark_ms: int) -> pa.Table:
        """The ids remembered at ``watermark_ms``, as ``(hash, check, ts)`` rows."""
        keep = (self.check != 0) & (self.ts > watermark_ms - self.horizon_ms)
        return pa.table([self.hash[keep], self.check[keep], self.ts[keep]], schema=STATE)

    @classmethod
    def load(cls, horizon_ms: int, table: pa.Table) -> SeenIds:
        seen = cls(horizon_ms)
        seen._settle(table)
        return seen

    def _find(self, hash: U64, check: U64) -> I64:
        """The slot of each id, -1 where it is absent."""
        found = np.full(len(hash), -1, dtype=np.int64)
        pending = np.arange(len(hash))
        at = (hash & np.uint64(self.capacity - 1)).astype(np.int64)
        while len(pending):
            self.work.probes += len(pending)
            held = self.check[at]
            hit = (held == check[pending]) & (self.hash[at] == hash[pending])
            found[pending[hit]] = at[hit]
            go = (held != 0) & ~hit
            pending, at = pending[go], (at[go] + 1) & (self.capacity - 1)
        return found

    def _insert(self, hash: U64, check: U64, ts: I64, watermark_ms: int) -> None:
        if 2 * (self.used + len(hash)) > self.capacity:
            self._rebuild(len(hash), watermark_ms)
        self._place(hash, check, ts)

    def _place(self, hash: U64, check: U64, ts: I64) -> None:
        """Put absent, distinct ids in the first free slot from their hash on."""
        pending = np.arange(len(hash))
        at = (hash & np.uint64(self.capacity - 1)).astype(np.int64)
        while len(pending):
            self.work.probes += len(pending)
            free = np.flatnonzero(self.check[at] == 0)
            # several ids may reach one free slot: each writes its place in ``pending``
            # to the slot's (unused) ts, and the one whose place stays there takes it
            self.ts[at[free]] = free
            won = free[self.ts[at[free]] == free]
            slots, ids = at[won], pending[won]
            self.hash[slots], self.check[slots], self.ts[slots] = hash[ids], check[ids], ts[ids]
            rest = np.ones(len(pending), dtype=bool)
            rest[won] = False
            pending, at = pending[rest], (at[rest] + 1) & (self.capacity - 1)
        self.used += len(hash)

    def _rebuild(self, incoming: int, watermark_ms: int) -> None:
        """A new table with the live ids and room for ``incoming`` more."""
        self.work.rebuilt += self.capacity
        self._settle(self.live(watermark_ms), incoming)

    def _settle(self, ids: pa.Table, incoming: int = 0) -> None:
        """Hold ``ids`` (distinct, ``STATE`` rows) in a new table with room for more."""
        hash, check, ts = (ids[name].to_numpy() for name in STATE.names)
        self._allocate(_capacity_for(len(ts) + incoming))
        self._place(hash, check, ts)
        if len(ts):
            middle = len(ts) // 2
            self.half_expired_at = int(np.partition(ts, middle)[middle]) + self.horizon_ms
            self.newest = int(ts.max())
        self.settled = len(ts)


def _capacity_for(n: int) -> int:
    """A power of two at least 4n: after a rebuild, a quarter full at most, so the next
    rebuild for room is at least n inserts away."""
    return max(MIN_CAPACITY, 1 << (4 * n - 1).bit_length())
