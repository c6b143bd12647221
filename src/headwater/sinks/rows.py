"""Log entries → HTTP request bodies, each row with a stable idempotency key.

A stream row's key is its log offset (``<sink>-<offset>``); a pipeline result row's key
is a digest of its content (``<sink>-<sha256>``), because a pipeline replayed after a
crash writes the same rows again at new offsets of its output topic. A request of
several rows is keyed by its rows' keys, so a retry of it carries the same key.

Columnar all the way: the rows' JSON, keys and offsets are Arrow and numpy arrays, a
request's body is one slice of the JSON buffer and its key one digest of a slice of the
keys' buffer, so the work per row is in DuckDB, Arrow and numpy; Python works per
request. A ``Row`` object is made only for a row looked at alone (a dead letter, a Kafka
message).
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.connection import connect_duckdb
from headwater.log.ports import LogEntry


@dataclass(frozen=True, slots=True)
class Row:
    offset: int
    key: str
    json: bytes


class Rows(Sequence[Row]):
    """Rows as JSON objects with their keys: ``json`` and ``keys`` hold each row followed
    by a separator (``,`` and a newline), so a run of rows is one slice of a buffer."""

    def __init__(self, offsets: np.ndarray, json: pa.Array, keys: pa.Array) -> None:
        self.offsets = offsets
        self._where: list[int] = offsets.tolist()  # Python ints: cheaper to index one by one
        self._json, self.json_at = _buffer(json)
        self._keys, self._keys_at = _buffer(keys)

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | Sequence[Row]:
        return _pick(i, len(self), self.row)

    def row(self, i: int) -> Row:
        return Row(self._where[i], self.key(i), self.json(i, i + 1))

    def __iter__(self) -> Iterator[Row]:
        return (self.row(i) for i in range(len(self)))

    def json(self, start: int, stop: int) -> bytes:
        """Rows ``start:stop`` as JSON objects joined by commas."""
        return self._json[self.json_at[start] : self.json_at[stop] - 1].tobytes()

    def each_json(self) -> list[bytes]:
        """Every row's JSON object, one ``bytes`` each."""
        data, at = self._json, self.json_at
        return [data[a : b - 1].tobytes() for a, b in itertools.pairwise(at)]

    def each_key(self) -> list[str]:
        return bytes(self._keys).decode().split("\n")[:-1]

    def key(self, i: int) -> str:
        return self._keys[self._keys_at[i] : self._keys_at[i + 1] - 1].tobytes().decode()

    def keys_digest(self, start: int, stop: int) -> str:
        """The digest of rows ``start:stop``'s keys, one per line."""
        keys = self._keys[self._keys_at[start] : self._keys_at[stop] - 1]
        return hashlib.sha256(keys).hexdigest()[:32]

    def slice(self, start: int, stop: int) -> RowRun:
        return RowRun(self, start, stop)


class RowRun(Sequence[Row]):
    """Rows ``start:stop`` of ``rows``: a request's rows, made one by one when looked at."""

    __slots__ = ("rows", "start", "stop")

    def __init__(self, rows: Rows, start: int, stop: int) -> None:
        self.rows, self.start, self.stop = rows, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | Sequence[Row]:
        return _pick(i, len(self), lambda k: self.rows.row(self.start + k))


def _pick(i: int | slice, n: int, row: Callable[[int], Row]) -> Row | Sequence[Row]:
    """Item ``i`` (or a slice) of a sequence of ``n`` rows made by ``row``."""
    if isinstance(i, slice):
        return [row(k) for k in range(*i.indices(n))]
    if i < 0:
        i += n
    if not 0 <= i < n:
        raise IndexError(i)
    return row(i)


@dataclass(frozen=True, slots=True)
class Request:
    rows: Sequence[Row]
    body: bytes
    key: str


def _buffer(strings: pa.Array) -> tuple[memoryview, list[int]]:
    """A string array's bytes and its value offsets (one more than the values)."""
    if len(strings) == 0:
        return memoryview(b""), [0]
    _, at, data = strings.buffers()
    kind = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    first = strings.offset  # a sliced array's offsets start further on; they are absolute
    offsets = np.frombuffer(at, kind, first + len(strings) + 1)[first:].tolist()
    return memoryview(data if data is not None else b""), offsets


class Encoder:
    """Rows → JSON objects, vectorized in DuckDB (``to_json``) and Arrow. Timestamps are
    ISO 8601 UTC with milliseconds (``2026-01-01T00:00:00.000Z``)."""

    def __init__(self) -> None:
        # Its own database (it reads the batch by name): in UTC, as every connection is.
        self._db = connect_duckdb(":memory:", lock=False)

    def close(self) -> None:
        self._db.close()

    def _json(self, table: pa.Table, digest: bool) -> tuple[pa.Array, pa.Array | None]:
        """Each row as a JSON object, and the sha256 of its text when ``digest``."""
        cols, names = [], []
        for f, col in zip(table.schema, table.columns, strict=True):
            if f.name.startswith("_"):
                continue  # internal columns stay inside
            if pa.types.is_timestamp(f.type):  # (pyarrow's strftime is 30x slower)
                text = col.cast(pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms"))
                iso = pc.replace_substring(text.cast(pa.string()), " ", "T", max_replacements=1)
                col = pc.binary_join_element_wise(iso, "Z", "", null_handling="emit_null")
            elif pa.types.is_floating(f.type):  # JSON has no NaN or Infinity: null
                col = pc.if_else(pc.is_finite(col), col, pa.scalar(None, f.type))
            cols.append(col)
            names.append(f.name)
        rows = pa.Table.from_arrays(cols, names=names)  # noqa: F841 (read by the SQL)
        sql = "SELECT to_json(rows)::VARCHAR AS j FROM rows"
        if digest:
            sql = f"SELECT j, sha256(j) AS h FROM ({sql})"
        out = self._db.sql(sql).to_arrow_table()
        json = out.column("j").combine_chunks()
        return json, out.column("h").combine_chunks() if digest else None

    def rows(
        self, sink: str, entries: list[LogEntry], by_offset: bool, keep: pa.Array | None = None
    ) -> Rows:
        """Each row as a JSON object, with its key; ``keep`` (one bool per row of all the
        entries) leaves rows out, e.g. those of erased data subjects."""
        offsets, jsons, digests = [], [], []
        at = 0
        # one query per run of entries with one schema (entries of one row each are common)
        for _, run in itertools.groupby(entries, key=lambda e: e.batch.schema):  # (no metadata)
            group = list(run)
            sizes = [e.batch.num_rows for e in group]
            n = sum(sizes)
            batches = [e.batch for e in group]
            table = pa.Table.from_batches(batches).combine_chunks()  # one scan, not one a row
            # each row's offset: its entry's first offset, plus its place in the entry
            firsts = np.repeat(np.array([e.offset for e in group], np.int64), sizes)
            ends = np.cumsum(sizes)
            where = firsts + np.arange(n, dtype=np.int64) - np.repeat(ends - sizes, sizes)
            if keep is not None:
                mask = keep.slice(at, n)
                table, where = table.filter(mask), where[mask.to_numpy(zero_copy_only=False)]
            at += n
            if table.num_rows:
                json, digest = self._json(table, not by_offset)
                offsets.append(where)
                jsons.append(json)
                digests.append(digest)
        if not offsets:
            empty = pa.array([], pa.string())
            return Rows(np.zeros(0, np.int64), empty, empty)
        where = np.concatenate(offsets)
        json = pa.concat_arrays(jsons)
        if by_offset:
            ids = pa.array(where).cast(pa.string())
        else:
            ids = pc.utf8_slice_codeunits(pa.concat_arrays(digests), 0, 32)
        keys = pc.binary_join_element_wise(f"{sink}-", ids, "\n", "")
        return Rows(where, pc.binary_join_element_wise(json, ",", ""), keys)


def encode_rows(
    sink: str, entries: list[LogEntry], by_offset: bool, keep: pa.Array | None = None
) -> Rows:
    """``Encoder().rows`` with a short-lived encoder."""
    enc = Encoder()
    try:
        return enc.rows(sink, entries, by_offset, keep)
    finally:
        enc.close()


def requests_of(
    sink: str, rows: Rows, batch_rows: int, batch_bytes: int, aligned: bool
) -> list[Request]:
    """Cut rows into requests of at most ``batch_rows`` rows and about ``batch_bytes``.

    With ``aligned`` (stream rows, dense offsets) requests also start at multiples of
    ``batch_rows``, so a replay from a committed offset cuts the same requests.
    """
    n = len(rows)
    if batch_rows == 1:  # a request per row: its body is the row, its key the row's
        bodies, keys = rows.each_json(), rows.each_key()
        return [Request(RowRun(rows, i, i + 1), bodies[i], keys[i]) for i in range(n)]
    starts: list[int] = []  # rows that must start a request
    if aligned:
        starts = np.flatnonzero(rows.offsets % batch_rows == 0).tolist()
    at = rows.json_at  # where each row (with its comma) starts in the JSON buffer
    out: list[Request] = []
    i = 0
    while i < n:
        j = min(n, i + batch_rows)
        k = bisect_right(starts, i)
        if k < len(starts):
            j = min(j, starts[k])
        # a row joins while the body stays within batch_bytes (each row and its comma)
        fit = bisect_right(at, at[i] + batch_bytes + 1, i + 1, j + 1) - 1
        j = max(i + 1, min(j, fit))
        out.append(request_of(sink, rows, i, j, batch_rows))
        i = j
    return out


def request_of(sink: str, rows: Rows, start: int, stop: int, batch_rows: int) -> Request:
    """One row alone is the body when ``batch_rows`` is 1; else a JSON array of rows."""
    run = rows.slice(start, stop)
    if batch_rows == 1 and stop - start == 1:
        return Request(run, rows.json(start, stop), rows.key(start))
    body = b"[" + rows.json(start, stop) + b"]"
    if stop - start == 1:
        return Request(run, body, rows.key(start))
    return Request(run, body, f"{sink}-batch-{rows.keys_digest(start, stop)}")
