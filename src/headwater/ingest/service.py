"""The ingest path of one request: decode → validate → dedup → durable append → answer.

Whether the request may come in at all (pushback, rate limits) is ``Admission``'s
answer, asked first (``ingest/admission.py``).

Everything between reading the body and the answer works on whole Arrow batches.
The answer is sent only after every accepted row and every quarantined row is
durable in the log; the store and the pipelines read them from there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

import msgspec
import numpy as np
import orjson
import pyarrow as pa

from headwater.errors import HeadwaterError
from headwater.ingest.admission import Admission
from headwater.ingest.batch import DecodeLimits, RowError, ValidatedBatch, decode_and_validate
from headwater.ingest.body import media_format
from headwater.ingest.coalesce import COALESCE_BODY_BYTES, Coalescer, Waiting, split
from headwater.ingest.dedup import Reservation, hash_ids
from headwater.ingest.idempotency import IdempotencyKeys, IdemRecord, body_digest
from headwater.ingest.inflight import InflightBudget
from headwater.ingest.rules import needs_sql
from headwater.ingest.small import row_texts
from headwater.ingest.streams import QUARANTINE_SCHEMA, StreamState, log_schema
from headwater.log.ports import Log
from headwater.model.schema import StreamSchema
from headwater.model.time import Clock
from headwater.observability import metrics as m
from headwater.observability.tracing import span

# Decoding holds the GIL (msgspec and Arrow's conversion of Python values), so a worker
# thread adds no parallelism, only GIL hand-offs with the event loop: measured on 1,000-event
# bodies, +2 ms of CPU per request and a third less throughput. Bodies up to this size
# (~10 ms of decoding) decode on the event loop; larger ones in a thread, so that one huge
# body does not stall every other request.
INLINE_DECODE_BYTES = 1 << 20
# Gzip and Avro bodies, and streams whose rules DuckDB evaluates, decode in these threads
# whatever their size (none has a cost bounded by a small body).
DECODE_THREADS = 2


__all__ = ["InflightBudget", "IngestOutcome", "IngestService"]


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    status: int
    body: bytes
    replayed: bool = False


def idempotency_marker(keys: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"key": pa.array(keys, pa.string())})


def csv_header(body: bytes, content_type: str) -> str | None:
    if not content_type.lower().startswith("text/csv"):
        return None
    end = body.find(b"\n")
    return body[: end if end >= 0 else len(body)].decode("utf-8", "replace").rstrip("\r")


def quarantine_batch(
    errors: list[RowError],
    fmt: str,
    header: str | None,
    version: int,
    now_ms: int,
    request_id: str | list[str],
) -> pa.RecordBatch:
    raws = [(header + "\n" + e.raw) if header is not None else e.raw for e in errors]
    n = len(errors)
    request_ids = [request_id] * n if isinstance(request_id, str) else request_id
    return pa.RecordBatch.from_arrays(
        [
            pa.array([e.row for e in errors], pa.int32()),
            pa.array([e.field for e in errors], pa.string()),
            pa.array([e.code for e in errors], pa.string()),
            pa.array([e.message for e in errors], pa.string()),
            pa.array(raws, pa.string()),
            pa.array([fmt] * n, pa.string()),
            pa.array([version] * n, pa.int32()),
            pa.array([now_ms] * n, pa.int64()),
            pa.array(request_ids, pa.string()),
        ],
        schema=QUARANTINE_SCHEMA,
    )


def format_of(content_type: str) -> str:
    ct = content_type.split(";")[0].strip().lower()
    if ct == "text/csv":
        return "csv"
    if "avro" in ct:
        return "avro"
    return "json"


class StreamCounters:
    """A stream's ingest counters, bound to their labels once (``labels()`` takes a lock)."""

    def __init__(self, tenant: str, name: str) -> None:
        self.bytes = m.INGEST_BYTES.labels(tenant, name)
        self.accepted = m.INGEST_ROWS.labels(tenant, name, "accepted")
        self.duplicate = m.INGEST_ROWS.labels(tenant, name, "duplicate")
        self.rejected = m.INGEST_ROWS.labels(tenant, name, "rejected")


class IngestService:
    def __init__(
        self,
        log: Log,
        clock: Clock,
        limits: DecodeLimits,
        idempotency: IdempotencyKeys,
        admission: Admission,
    ) -> None:
        self._log = log
        self._clock = clock
        self._limits = limits
        self.idempotency = idempotency
        self.admission = admission
        self._counters: dict[tuple[str, str], StreamCounters] = {}
        self._coalescer = Coalescer(self._ingest_group)
        # Its own threads: ingest never takes the default pool that queries and reads use.
        self._pool = ThreadPoolExecutor(DECODE_THREADS, thread_name_prefix="ingest-decode")

    async def ingest(
        self,
        st: StreamState,
        body: bytes,
        content_type: str,
        content_encoding: str | None,
        idem_key: str | None,
        principal: str,
        request_id: str,
    ) -> IngestOutcome:
        self.admission.pushback(st)
        now_ms = self._clock.now_ms()
        digest = body_digest(body) if idem_key else ""
        if idem_key:
            cached = await self.idempotency.begin(
                st.tenant, st.schema.name, idem_key, digest, now_ms
            )
            if cached is not None:
                return IngestOutcome(200, cached, replayed=True)
        lines = self._coalescible(st, body, content_type, content_encoding)
        if lines is not None:
            try:
                self.admission.take(st.tenant, principal, len(lines), len(body))
            except BaseException:
                if idem_key:
                    self.idempotency.finish(st.tenant, st.schema.name, None, idem_key)
                raise
            key = (st.tenant, st.schema.name, st.schema.version)
            # The group settles the Idempotency-Key, even if this request is cancelled meanwhile.
            outcome: IngestOutcome = await self._coalescer.join(
                key, Waiting(st, lines, len(body), request_id, idem_key, digest)
            )
            return outcome
        work = self._ingest(
            st, body, content_type, content_encoding, idem_key, digest, principal, request_id
        )
        if not idem_key:
            return (await work)[1]
        # Its own task, so that a request cancelled while its rows are written still
        # settles its key with the answer they got (a retry then gets that answer).
        task = asyncio.ensure_future(work)
        task.add_done_callback(partial(self._settle, st, idem_key))
        return (await asyncio.shield(task))[1]

    def _settle(
        self,
        st: StreamState,
        key: str,
        task: asyncio.Future[tuple[IdemRecord | None, IngestOutcome]],
    ) -> None:
        failed = task.cancelled() or task.exception() is not None
        rec = None if failed else task.result()[0]
        self.idempotency.finish(st.tenant, st.schema.name, rec, key)

    async def _ingest(
        self,
        st: StreamState,
        body: bytes,
        content_type: str,
        content_encoding: str | None,
        idem_key: str | None,
        digest: str,
        principal: str,
        request_id: str,
    ) -> tuple[IdemRecord | None, IngestOutcome]:
        schema = st.schema
        now_ms = self._clock.now_ms()
        t0 = time.perf_counter()
        with span("ingest.decode", stream=schema.name, bytes=len(body)):
            batch = await self.decode(body, content_type, content_encoding, schema, now_ms)
        m.INGEST_DECODE_SECONDS.observe(time.perf_counter() - t0)
        self.admission.take(st.tenant, principal, batch.total_rows, len(body))
        valid, reserved, keep = self.dedup(st, batch, now_ms)
        with settling(reserved):
            duplicates = 0 if keep is None else int(keep.size - keep.sum())
            answer = self._answer(st, valid.num_rows, duplicates, batch.errors)
            rec = IdemRecord(idem_key, digest, answer, now_ms) if idem_key else None
            meta = msgspec.msgpack.encode(rec) if rec else b""
            quarantine = None
            if batch.errors:
                quarantine = quarantine_batch(
                    batch.errors, format_of(content_type), csv_header(body, content_type),
                    schema.version, now_ms, request_id,
                )  # fmt: skip
            end = await self._append(st, valid, quarantine, meta, [rec.key] if rec else [])
            if reserved is not None:
                reserved.settle(end)
        self.count(st, batch.errors, valid.num_rows, duplicates, len(body))
        return rec, IngestOutcome(200, answer)

    async def decode(
        self,
        body: bytes,
        content_type: str,
        content_encoding: str | None,
        schema: StreamSchema,
        now_ms: int,
        limits: DecodeLimits | None = None,
    ) -> ValidatedBatch:
        """``decode_and_validate`` on the event loop when cheap, else in ingest's threads."""
        args = (body, content_type, content_encoding, schema, limits or self._limits, now_ms)
        if self._inline(len(body), content_type, content_encoding, schema):
            return decode_and_validate(*args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, decode_and_validate, *args)

    @staticmethod
    def _inline(
        nbytes: int, content_type: str, content_encoding: str | None, schema: StreamSchema
    ) -> bool:
        """Whether a body decodes on the event loop: small, plain text, no rule run by DuckDB.

        Gzip and Avro (whose blocks may be deflated) can inflate far past their size.
        """
        return (
            nbytes <= INLINE_DECODE_BYTES
            and (content_encoding or "identity").strip().lower() in ("identity", "")
            and "avro" not in content_type.lower()
            and not needs_sql(schema)
        )

    def _coalescible(
        self, st: StreamState, body: bytes, content_type: str, content_encoding: str | None
    ) -> list[bytes] | None:
        """The rows of a small JSON body that can share a group with others, or None."""
        if len(body) > COALESCE_BODY_BYTES or (content_encoding or "identity") != "identity":
            return None
        try:
            fmt = media_format(content_type)
        except HeadwaterError:
            return None  # answered on its own, with the reason
        return row_texts(body, fmt, st.schema, self._limits)

    async def _ingest_group(self, group: list[Waiting]) -> None:
        """Ingest a group of requests as one; answer each and settle its Idempotency-Key."""
        st: StreamState = group[0].stream
        try:
            recs, answers = await self._store_group(st, group)
        except BaseException:
            for w in group:  # a retry of these keys will run again
                if w.idem_key:
                    self.idempotency.finish(st.tenant, st.schema.name, None, w.idem_key)
            raise
        for w, rec, answer in zip(group, recs, answers, strict=True):
            if rec is not None and w.idem_key:
                self.idempotency.finish(st.tenant, st.schema.name, rec, w.idem_key)
            if not w.future.done():  # a request cancelled meanwhile has nobody to answer
                w.future.set_result(IngestOutcome(200, answer))

    async def _store_group(
        self, st: StreamState, group: list[Waiting]
    ) -> tuple[list[IdemRecord | None], list[bytes]]:
        """Decode, dedup and append the group's rows; each member's record and answer."""
        schema = st.schema
        now_ms = self._clock.now_ms()
        counts = [len(w.lines) for w in group]
        body = b"\n".join(line for w in group for line in w.lines) + b"\n"
        t0 = time.perf_counter()
        # Each member kept within the per-request limits; their union is not a request.
        limits = replace(
            self._limits,
            max_body_bytes=max(self._limits.max_body_bytes, len(body)),
            max_rows=max(self._limits.max_rows, sum(counts)),
        )
        with span("ingest.decode", stream=schema.name, bytes=len(body), requests=len(group)):
            batch = await self.decode(body, "application/x-ndjson", None, schema, now_ms, limits)
        m.INGEST_DECODE_SECONDS.observe(time.perf_counter() - t0)
        valid, reserved, keep = self.dedup(st, batch, now_ms)
        with settling(reserved):
            shares = split(counts, batch.valid_rows.to_numpy(), keep, batch.errors)
            quarantine = None
            if batch.errors:
                quarantine = quarantine_batch(
                    [e for es in shares.errors for e in es], "json", None, schema.version, now_ms,
                    [group[k].request_id for k in shares.owners()],
                )  # fmt: skip
            answers = [
                self._answer(st, accepted, dups, errors)
                for accepted, dups, errors in zip(
                    shares.accepted, shares.duplicates, shares.errors, strict=True
                )
            ]
            recs = [
                IdemRecord(w.idem_key, w.digest, answer, now_ms) if w.idem_key else None
                for w, answer in zip(group, answers, strict=True)
            ]
            kept = [r for r in recs if r is not None]
            meta = msgspec.msgpack.encode(kept) if kept else b""
            end = await self._append(st, valid, quarantine, meta, [r.key for r in kept])
            if reserved is not None:
                reserved.settle(end)
        duplicates = sum(shares.duplicates)
        self.count(st, batch.errors, valid.num_rows, duplicates, sum(w.nbytes for w in group))
        return recs, answers

    def _answer(
        self, st: StreamState, accepted: int, duplicates: int, errors: list[RowError]
    ) -> bytes:
        n_rejected = len(errors)
        return orjson.dumps(
            {
                "accepted": accepted,
                "rejected": n_rejected,
                "duplicates": duplicates,
                "errors": [
                    {"row": e.row, "field": e.field, "code": e.code, "message": e.message}
                    for e in errors[: self._limits.max_errors]
                ],
                "errors_truncated": n_rejected > self._limits.max_errors,
                "schema_version": st.schema.version,
            }
        )

    async def _append(
        self,
        st: StreamState,
        valid: pa.RecordBatch,
        quarantine: pa.RecordBatch | None,
        meta: bytes,
        keys: list[str],
    ) -> int:
        """Append the valid and the rejected rows; return once both are durable.

        ``meta`` holds the answers to the Idempotency-Keys ``keys``: when there is no row
        to store (all duplicates), a marker entry makes them durable. If the append
        fails, the caller releases the ids reserved for the valid rows so that a retry is
        not taken for a duplicate. Returns the log end offset of the valid rows (0: none).
        """
        appends = []
        if quarantine is not None:
            appends.append(self._log.append(st.quarantine_topic, quarantine, meta))
        if valid.num_rows:
            appends.append(self._log.append(st.topic, valid, meta))
        elif keys and quarantine is None:
            appends.append(self._log.append(st.idempotency_topic, idempotency_marker(keys), meta))
        rows = valid.num_rows + (quarantine.num_rows if quarantine is not None else 0)
        with span("ingest.log_append", entries=len(appends), rows=rows):
            if len(appends) == 1:
                results = [await appends[0]]  # gather would cost two more tasks per request
            else:
                results = list(await asyncio.gather(*appends))
        if not valid.num_rows:
            return 0
        done = results[-1]  # the valid rows' append is queued last
        return done.offset + done.count

    def dedup(
        self, st: StreamState, batch: ValidatedBatch, now_ms: int
    ) -> tuple[pa.RecordBatch, Reservation | None, np.ndarray | None]:
        """Attach system columns; drop rows whose id was seen; reserve the new ids.

        Returns the rows to append, the reservation of their ids (settle or release it),
        and which valid rows were kept (None when the stream has no id field: all of them).
        """
        schema = st.schema
        table = batch.valid
        n = table.num_rows
        hashes: np.ndarray | None = None
        reserved = None
        keep = None
        if schema.id is not None and n:
            hashes = hash_ids(table.column(schema.id))
            has_id = hashes != 0
            keep = st.ids.first_unseen(hashes) | ~has_id
            if not keep.all():
                table = table.filter(pa.array(keep))
                hashes = hashes[keep]
            reserved = st.ids.reserve(hashes[hashes != 0])
        rows = table.num_rows
        cols = [
            *(c.chunk(0) if c.num_chunks == 1 else c.combine_chunks() for c in table.columns),
            pa.repeat(pa.scalar(now_ms, pa.int64()), rows),
            pa.repeat(pa.scalar(schema.version, pa.int32()), rows),
            pa.array(hashes, pa.uint64(), mask=(hashes == 0))
            if hashes is not None
            else pa.nulls(rows, pa.uint64()),
        ]
        return pa.RecordBatch.from_arrays(cols, schema=log_schema(schema)), reserved, keep

    def count(
        self, st: StreamState, errors: list[RowError], accepted: int, dups: int, nbytes: int
    ) -> None:
        tenant, name = st.tenant, st.schema.name
        counters = self._counters.get((tenant, name))
        if counters is None:
            counters = self._counters[(tenant, name)] = StreamCounters(tenant, name)
        counters.bytes.inc(nbytes)
        if accepted:
            counters.accepted.inc(accepted)
        if dups:
            counters.duplicate.inc(dups)
        if errors:
            counters.rejected.inc(len(errors))
            codes: dict[str, int] = {}
            for e in errors:
                codes[e.code] = codes.get(e.code, 0) + 1
            for code, k in codes.items():
                m.QUARANTINE_ROWS.labels(tenant, name, code).inc(k)


@contextmanager
def settling(reservation: Reservation | None) -> Iterator[None]:
    """Release ``reservation`` if what follows fails: a retry is then no duplicate."""
    try:
        yield
    except BaseException:
        if reservation is not None:
            reservation.release()
        raise
