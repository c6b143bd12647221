"""Log entries → HTTP request bodies, each row with a stable idempotency key.

A stream row's key is its log offset (``<sink>-<offset>``); a pipeline result row's key
is a digest of its content (``<sink>-<sha256>``), because a pipeline replayed after a
crash writes the same rows again at new offsets of its output topic. A request of
several rows is keyed by its rows' keys, so a retry of it carries the same key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.connection import connect_duckdb
from headwater.log.ports import LogEntry


@dataclass(frozen=True, slots=True)
class Row:
    offset: int
    key: str
    json: bytes


@dataclass(frozen=True, slots=True)
class Request:
    rows: list[Row]
    body: bytes
    key: str


class Encoder:
    """Rows → JSON objects, vectorized in DuckDB (``to_json``): ~6x faster than a Python
    loop over ``to_pylist`` + orjson. Timestamps are ISO 8601 UTC (``...T...Z``)."""

    def __init__(self) -> None:
        # Its own database (it reads the batch by name): in UTC, as every connection is.
        self._db = connect_duckdb(":memory:", lock=False)

    def close(self) -> None:
        self._db.close()

    def json(self, batch: pa.RecordBatch) -> list[bytes]:
        cols, names = [], []
        for f, col in zip(batch.schema, batch.columns, strict=True):
            if f.name.startswith("_"):
                continue  # internal columns stay inside
            if pa.types.is_timestamp(f.type):
                col = pc.strftime(col.cast(pa.timestamp("ms", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
            cols.append(col)
            names.append(f.name)
        rows = pa.Table.from_arrays(cols, names=names)  # noqa: F841 (read by the SQL)
        out = self._db.sql("SELECT to_json(rows)::VARCHAR FROM rows").fetchnumpy()
        return [s.encode() for s in out[next(iter(out))]]

    def rows(
        self, sink: str, entries: list[LogEntry], by_offset: bool, keep: pa.Array | None = None
    ) -> list[Row]:
        """Each row as a JSON object, with its key; ``keep`` (one bool per row of all the
        entries) leaves rows out, e.g. those of erased data subjects."""
        out: list[Row] = []
        at = 0
        for e in entries:
            n = e.batch.num_rows
            batch, index = e.batch, list(range(n))
            if keep is not None:
                part = keep.slice(at, n)
                batch = batch.filter(part)
                index = [i for i, k in enumerate(part.to_pylist()) if k]
            at += n
            for i, text in zip(index, self.json(batch), strict=True):
                offset = e.offset + i
                if by_offset:
                    key = f"{sink}-{offset}"
                else:
                    key = f"{sink}-{hashlib.sha256(text).hexdigest()[:32]}"
                out.append(Row(offset, key, text))
        return out


def encode_rows(
    sink: str, entries: list[LogEntry], by_offset: bool, keep: pa.Array | None = None
) -> list[Row]:
    """``Encoder().rows`` with a short-lived encoder."""
    enc = Encoder()
    try:
        return enc.rows(sink, entries, by_offset, keep)
    finally:
        enc.close()


def requests_of(
    sink: str, rows: list[Row], batch_rows: int, batch_bytes: int, aligned: bool
) -> list[Request]:
    """Cut rows into requests of at most ``batch_rows`` rows and about ``batch_bytes``.

    With ``aligned`` (stream rows, dense offsets) requests also start at multiples of
    ``batch_rows``, so a replay from a committed offset cuts the same requests.
    """
    out: list[Request] = []
    cur: list[Row] = []
    size = 0
    for r in rows:
        boundary = aligned and batch_rows > 1 and r.offset % batch_rows == 0
        if cur and (len(cur) >= batch_rows or size + len(r.json) > batch_bytes or boundary):
            out.append(request_of(sink, cur, batch_rows))
            cur, size = [], 0
        cur.append(r)
        size += len(r.json) + 1
    if cur:
        out.append(request_of(sink, cur, batch_rows))
    return out


def request_of(sink: str, rows: list[Row], batch_rows: int) -> Request:
    """One row alone is the body when ``batch_rows`` is 1; else a JSON array of rows."""
    if batch_rows == 1 and len(rows) == 1:
        return Request(rows, rows[0].json, rows[0].key)
    body = b"[" + b",".join(r.json for r in rows) + b"]"
    if len(rows) == 1:
        return Request(rows, body, rows[0].key)
    digest = hashlib.sha256("\n".join(r.key for r in rows).encode()).hexdigest()[:32]
    return Request(rows, body, f"{sink}-batch-{digest}")
