"""The ingest entry below decoding, for sources: ``accept(stream, data, format, origin)``.

A source hands over an Arrow batch (or raw bytes plus a format name) and says where it
came from: ``Origin(source, partition, position)``. The rows take the same path as an
HTTP body (validate → quarantine → dedup → durable log), and the partition's new
position is written *in the same durable log entry* (its ``meta``), so a source that
restarts after ``kill -9`` resumes from exactly the last acknowledged position:
``SourceCommit`` records are read back by ``connectors.sources.positions``.

Entries are appended one after the other: the rejected rows first, then the valid rows
carrying the commit; with no row to store at all, a one-row marker on the stream's
idempotency topic carries it. A crash between the two appends re-reads the chunk: its
rejected rows may then be quarantined twice, its valid rows never.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeAlias

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from headwater.errors import BadRequest, HeadwaterError
from headwater.ingest.admission import Admission, TenantRates
from headwater.ingest.batch import decode_and_validate
from headwater.ingest.convert import from_values
from headwater.ingest.model import CellError, Decoded, DecodeLimits, RowError, ValidatedBatch
from headwater.ingest.pii import apply_pii
from headwater.ingest.service import (
    INLINE_DECODE_BYTES,
    IngestService,
    idempotency_marker,
    quarantine_batch,
    settling,
)
from headwater.ingest.streams import StreamState
from headwater.ingest.validate import validate
from headwater.log.ports import Log
from headwater.model.schema import ARROW_TYPES, StreamSchema, arrow_schema
from headwater.model.time import Clock
from headwater.observability import metrics as m

SOURCE_META = b"hw-source:"
CONTENT_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "avro": "avro/binary",
}
FORMATS = (*CONTENT_TYPES, "parquet")
REFUSED_RAW_CHARS = 1 << 20
PAUSE_S = 0.5  # how long a pushed-back source waits before offering its chunk again


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a chunk came from; ``position`` is where the partition stands after it."""

    source: str
    partition: str
    position: str
    epoch: int = 0  # the source's creation time: a re-created source starts afresh


class SourceCommit(msgspec.Struct, frozen=True, array_like=True):
    """The ``meta`` of the entry that made a chunk durable: the partition's new position.

    ``seq`` grows with every commit of the source, so the newest commit of a partition
    is found whichever topic it was written to.
    """

    tenant: str
    source: str
    partition: str
    position: str
    seq: int
    epoch: int = 0


def commit_meta(commit: SourceCommit) -> bytes:
    return SOURCE_META + msgspec.msgpack.encode(commit)


def commit_of(meta: bytes) -> SourceCommit | None:
    if not meta.startswith(SOURCE_META):
        return None
    return msgspec.msgpack.decode(meta[len(SOURCE_META) :], type=SourceCommit)


@dataclass(slots=True)
class IngestResult:
    """Typed counts of one accepted chunk; ``errors`` lists every rejected row."""

    accepted: int
    rejected: int
    duplicates: int
    errors: list[RowError] = field(default_factory=list)
    topic: str = ""  # where the commit was written, and the end offset of that entry
    end_offset: int = 0


Data: TypeAlias = pa.RecordBatch | pa.Table | bytes


class Acceptor:
    """Runs chunks of sources through the ingest path; ``admit`` is the pushback answer."""

    def __init__(
        self,
        ingest: IngestService,
        log: Log,
        clock: Clock,
        limits: DecodeLimits,
        lag_rows: Callable[[StreamState], int],
        max_lag_rows: int,
        tenant_rates: TenantRates | None = None,
    ) -> None:
        self._ingest = ingest
        self._log = log
        self._clock = clock
        self._limits = limits
        # Sources have no key: the store's lag, the id index and the tenant's quotas hold.
        self.admission = Admission(lag_rows, max_lag_rows, tenant_rates=tenant_rates)

    def admit(self, st: StreamState) -> None:
        """Raise ``Overloaded`` while the path behind the log does not keep up (a source
        pauses, then offers its chunk again)."""
        self.admission.pushback(st, retry_after_s=PAUSE_S)

    async def accept(
        self, st: StreamState, data: Data, fmt: str, origin: Origin, seq: int
    ) -> IngestResult:
        """Validate, quarantine, dedup and append ``data``; return once it is durable.

        ``Overloaded`` (pushback) or ``RateLimited`` (the tenant's ingest quotas) leave
        nothing written: the caller waits ``retry_after_s`` and offers the chunk again.

        ``fmt`` names the format of raw bytes (``json ndjson csv avro parquet``, with
        ``+gzip`` for gzip); Arrow data passes ``"arrow"``. The entry carrying
        ``SourceCommit(tenant, origin..., seq)`` is durable when this returns; ``seq``
        must grow with each commit of the source.
        """
        self.admit(st)
        now_ms = self._clock.now_ms()
        nbytes = len(data) if isinstance(data, bytes) else int(data.nbytes)
        t0 = time.perf_counter()
        refused = False
        try:
            if nbytes <= INLINE_DECODE_BYTES:
                batch = decode_chunk(data, fmt, st.schema, self._limits, now_ms)
            else:
                batch = await asyncio.to_thread(
                    decode_chunk, data, fmt, st.schema, self._limits, now_ms
                )
        except HeadwaterError as exc:
            if exc.status >= 500 or exc.status == 429:
                raise
            batch, refused = refused_chunk(st.schema, data, exc), True
        m.INGEST_DECODE_SECONDS.observe(time.perf_counter() - t0)
        self.admission.take(st.tenant, None, batch.total_rows, nbytes)  # quotas: wait
        valid, reserved, keep = self._ingest.dedup(st, batch, now_ms)
        duplicates = 0 if keep is None else int(keep.size - keep.sum())
        meta = commit_meta(SourceCommit(st.tenant, origin.source, origin.partition,
                                        origin.position, seq, origin.epoch))  # fmt: skip
        request_id = f"source:{origin.source}:{origin.partition}@{origin.position}"
        try:
            header = csv_header_of(data, fmt) if batch.errors and not refused else None
            topic, end = await self._append(st, valid, batch, fmt, header, meta, now_ms,
                                            request_id)  # fmt: skip
        except BaseException:
            if reserved is not None:
                reserved.release()  # a retry of these rows is then no duplicate
            raise
        if reserved is not None:
            reserved.settle(end if topic == st.topic else 0)
        self._ingest.count(st, batch.errors, valid.num_rows, duplicates, nbytes)
        return IngestResult(valid.num_rows, len(batch.errors), duplicates, batch.errors,
                            topic, end)  # fmt: skip

    async def refuse(
        self, st: StreamState, problem: HeadwaterError, text: str, origin: Origin, seq: int
    ) -> IngestResult:
        """Quarantine a whole chunk (or file) that cannot be read, as one row holding
        ``text``, and commit ``origin``'s position with it."""
        batch = refused_chunk(st.schema, text.encode(), problem)
        meta = commit_meta(SourceCommit(st.tenant, origin.source, origin.partition,
                                        origin.position, seq, origin.epoch))  # fmt: skip
        request_id = f"source:{origin.source}:{origin.partition}@{origin.position}"
        now_ms = self._clock.now_ms()
        valid, reserved, _ = self._ingest.dedup(st, batch, now_ms)
        with settling(reserved):
            topic, end = await self._append(
                st, valid, batch, "json", None, meta, now_ms, request_id
            )
        if reserved is not None:
            reserved.settle(end if topic == st.topic else 0)
        self._ingest.count(st, batch.errors, 0, 0, 0)
        return IngestResult(0, 1, 0, batch.errors, topic, end)

    async def _append(
        self, st: StreamState, valid: pa.RecordBatch, batch: ValidatedBatch, fmt: str,
        header: str | None, meta: bytes, now_ms: int, request_id: str,
    ) -> tuple[str, int]:  # fmt: skip
        """Rejected rows first, then the valid ones with the commit (see the module doc)."""
        if batch.errors:
            # replay reads the raw text as JSON, or as CSV under its header
            kind = "csv" if header is not None else "json"
            quarantine = quarantine_batch(
                batch.errors, kind, header, st.schema.version, now_ms, request_id
            )
            last = not valid.num_rows
            done = await self._log.append(st.quarantine_topic, quarantine, meta if last else b"")
            if last:
                return done.topic, done.offset + done.count
        if valid.num_rows:
            done = await self._log.append(st.topic, valid, meta)
        else:
            marker = idempotency_marker([request_id])
            done = await self._log.append(st.idempotency_topic, marker, meta)
        return done.topic, done.offset + done.count


def refused_chunk(schema: StreamSchema, data: Data, exc: HeadwaterError) -> ValidatedBatch:
    """A chunk that cannot be decoded at all (not UTF-8, a damaged container): one
    quarantined row holding its text (the first ``REFUSED_RAW_CHARS``), never a stuck
    source re-reading it forever."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
    error = RowError(0, None, exc.code, f"the whole chunk was refused: {exc.message}",
                     text[:REFUSED_RAW_CHARS])  # fmt: skip
    return ValidatedBatch(arrow_schema(schema).empty_table(), pa.array([], pa.int64()),
                          [error], 1)  # fmt: skip


def csv_header_of(data: Data, fmt: str) -> str | None:
    """The header line of a CSV chunk (its rejected rows are quarantined under it)."""
    if not isinstance(data, bytes) or not fmt.startswith("csv"):
        return None
    text = gzip.decompress(data) if fmt.endswith("+gzip") else data
    end = text.find(b"\n")
    return text[: end if end >= 0 else len(text)].decode("utf-8", "replace").rstrip("\r")


def decode_chunk(
    data: Data, fmt: str, schema: StreamSchema, limits: DecodeLimits, now_ms: int
) -> ValidatedBatch:
    """Decode and validate one chunk of a source, by format (no per-request size caps:
    a source's chunks are sized by the source)."""
    base, _, encoding = fmt.partition("+")
    if isinstance(data, bytes) and base == "parquet":
        data = pq.read_table(io.BytesIO(data))
        base = "arrow"
    if not isinstance(data, bytes):
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        return apply_pii(validate_arrow(table, schema, limits, now_ms), schema, limits.pii_key)
    if base not in CONTENT_TYPES:
        raise BadRequest(
            f"format {fmt!r} is not supported; use one of {', '.join(FORMATS)}",
            code="bad_source_format",
        )
    big = max(limits.max_body_bytes, len(data) * 64)
    roomy = replace(limits, max_body_bytes=big, max_rows=max(limits.max_rows, len(data)))
    return decode_and_validate(data, CONTENT_TYPES[base], encoding or None, schema, roomy, now_ms)


def validate_arrow(
    table: pa.Table, schema: StreamSchema, limits: DecodeLimits, now_ms: int
) -> ValidatedBatch:
    """Validate Arrow columns against the stream: same-typed or safely castable columns
    pass as they are; others are checked value by value (a bad cell rejects its row)."""
    n = table.num_rows
    columns: list[pa.Array] = []
    cell_errors: list[list[CellError]] = []
    for f in schema.fields:
        if f.name not in table.column_names:
            columns.append(pa.nulls(n, ARROW_TYPES[f.type]))
            cell_errors.append([])
            continue
        col = table.column(f.name).combine_chunks()
        cast = _cast(col, ARROW_TYPES[f.type]) if f.type != "json" else None
        if cast is not None:
            columns.append(cast)
            cell_errors.append([])
        else:
            array, errors = from_values(col.to_pylist(), f, limits.max_depth)
            columns.append(array)
            cell_errors.append(errors)

    def raw(i: int) -> str:  # as JSON, so that a quarantine replay can read it
        return orjson.dumps(table.slice(i, 1).to_pylist()[0], default=str).decode()

    decoded = Decoded(columns, cell_errors, np.arange(n, dtype=np.int64), [], n, raw)
    verdict = validate(decoded, schema, limits, now_ms)
    problems = sorted(verdict.failures, key=lambda p: p.row)
    rows = [RowError(p.row, p.field, p.code, p.message, decoded.raw(p.row)) for p in problems]
    return ValidatedBatch(verdict.valid, pa.array(verdict.valid_rows, pa.int64()), rows, n)


def _cast(col: pa.Array, target: pa.DataType) -> pa.Array | None:
    if col.type == target:
        return col
    if pa.types.is_timestamp(target) and not pa.types.is_timestamp(col.type):
        return None  # numbers and strings take the checked path (units, ISO text)
    if pa.types.is_floating(col.type) and pa.types.is_integer(target):
        return None
    try:
        return col.cast(target, safe=True)
    except (pa.ArrowException, ValueError):
        return None
