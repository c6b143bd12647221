"""Erase a data subject: every row of theirs, wherever it was stored, and a tombstone.

``DELETE /v1/streams/{name}/subjects/{value}`` on a stream that declares a ``subject``
field. In order:

1. The store catches up with what was acknowledged. Then a tombstone goes into the
   catalog (durable) and into the readers' filter: from then
   on the materializer, pipelines and backfills drop the subject's rows received at or
   before the erasure, though the hot log still holds them until log retention trims it.
2. The store catches up with the log, then the subject's rows go from the stream's table,
   its quarantine (matched in each rejected row's raw JSON or CSV text), and every
   output, late and error table of the pipelines reading the stream that carry the field.
3. Pipelines that were mid-batch finish the batches they had read; their outputs are
   swept again once they are past the erasure.
4. The hot log is rewritten: the subject's rows in the stream's topic are blanked (every
   field null, marked erased; offsets and event-id hashes stay, so nothing is replayed
   or double-counted) and the raw text and message of their rejected rows are dropped
   from the quarantine topic (``headwater.log.rewrite``).

The answer (also kept in the catalog) says what went where.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from headwater.errors import BadRequest
from headwater.ingest.pii import transform
from headwater.ingest.streams import StreamState, quarantine_table_of
from headwater.log.rewrite import Rewritable, compact, redact
from headwater.runtime import Runtime
from headwater.store.ports import RowQuery

SETTLE_S = 10.0  # how long to wait for readers to pass the erasure before sweeping again


class Readers(Protocol):
    def readers_of(self, tenant: str, topic: str) -> list[tuple[list[str], int]]:
        """For each pipeline reading ``topic``: its tables and its committed offset."""
        ...


async def erase_subject(
    p: Runtime, readers: Readers | None, st: StreamState, raw_value: str
) -> dict[str, Any]:
    subject = st.schema.subject
    if subject is None:
        raise BadRequest(
            f"stream {st.schema.name!r} declares no subject field; add one with "
            'PUT /v1/streams/{name} ("subject": "user_id") to erase by it',
            code="no_subject_field",
        )
    value = _stored_value(p, st, subject, raw_value)
    name = st.schema.name
    # What was acknowledged so far is stored first, so the deletes below find (and count) it.
    await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic), SETTLE_S)
    now = p.clock.now_ms()
    await asyncio.to_thread(p.catalog.add_erasure, st.tenant, name, value, now)
    p.tombstones.add(st.tenant, name, value, now)
    end = p.log.end_offset(st.topic)
    await p.materializer.caught_up(st.topic, end, SETTLE_S)
    await p.materializer.caught_up(st.quarantine_topic, p.log.end_offset(st.quarantine_topic))
    one = pa.array([value])
    tables: dict[str, int] = {name: await _delete(p, st.tenant, name, subject, one)}
    quarantine = await asyncio.to_thread(_sweep_quarantine, p, st, subject, value)
    pipelines = readers.readers_of(st.tenant, st.topic) if readers is not None else []
    await _sweep_outputs(p, st.tenant, pipelines, subject, one, tables)
    if pipelines and readers is not None:  # batches read before the tombstone: wait, sweep again
        await _settle(readers, st, end)
        await _sweep_outputs(p, st.tenant, pipelines, subject, one, tables)
    in_log = await asyncio.to_thread(_blank_log, p, st, subject, value, now)
    report: dict[str, Any] = {
        "stream": name, "subject_field": subject, "erased_at_ms": now,
        "rows_deleted": tables, "quarantined_rows_deleted": quarantine, "log": in_log,
    }  # fmt: skip
    await asyncio.to_thread(p.catalog.erasure_done, st.tenant, name, value, report)
    return report


def _blank_log(p: Runtime, st: StreamState, subject: str, value: str, now: int) -> dict[str, Any]:
    """Blank the subject's rows in the hot log: the stream's topic and its quarantine's."""
    if not isinstance(p.log, Rewritable):
        return {"rewritten": False, "reason": "this log cannot rewrite entries; rows stay "
                "hidden from every reader until log retention trims them"}  # fmt: skip
    counts = {"rows_blanked": 0, "quarantined_rows_blanked": 0}

    def rows_of_subject(batch: pa.RecordBatch) -> pa.RecordBatch | None:
        if subject not in batch.schema.names:
            return None
        received = batch.column("_received_ms")
        mask = pc.and_(
            pc.fill_null(pc.equal(batch.column(subject).cast(pa.string()), value), False),
            pc.fill_null(pc.less_equal(received, now), False),
        )
        hits = pc.sum(mask).as_py() or 0
        counts["rows_blanked"] += hits
        return redact(batch, mask) if hits else None

    def rejected_of_subject(batch: pa.RecordBatch) -> pa.RecordBatch | None:
        raws = batch.column("raw").to_pylist()
        mask = pa.array([_holds(raw, subject, value) for raw in raws], pa.bool_())
        hits = pc.sum(mask).as_py() or 0
        if not hits:
            return None
        counts["quarantined_rows_blanked"] += hits
        cols = [
            pc.if_else(mask, pa.scalar(None, c.type), c) if n in ("raw", "message") else c
            for n, c in zip(batch.schema.names, batch.columns, strict=True)
        ]
        return compact(pa.RecordBatch.from_arrays(cols, schema=batch.schema))

    entries = p.log.rewrite_blocking(st.topic, rows_of_subject)
    entries += p.log.rewrite_blocking(st.quarantine_topic, rejected_of_subject)
    return {"rewritten": True, "entries_rewritten": entries, **counts}


def _stored_value(p: Runtime, st: StreamState, subject: str, raw: str) -> str:
    """The value as rows store it: checked against the field's type, hashed if pii 'hash'."""
    f = st.schema.field(subject)
    if f.type == "int":
        try:
            return str(int(raw))
        except ValueError:
            raise BadRequest(
                f"subject field {subject!r} holds whole numbers; {raw!r} is not one",
                code="bad_subject",
            ) from None
    if f.pii == "hash":
        hashed = transform(pa.array([raw]), "hash", p.ingest_limits.pii_key)[0].as_py()
        return str(hashed)
    return raw


async def _delete(p: Runtime, tenant: str, table: str, column: str, values: pa.Array) -> int:
    return await asyncio.to_thread(p.store.delete_in, tenant, table, column, values)


async def _sweep_outputs(
    p: Runtime,
    tenant: str,
    pipelines: list[tuple[list[str], int]],
    subject: str,
    values: pa.Array,
    counts: dict[str, int],
) -> None:
    for names, _ in pipelines:
        for table in names:
            schema = p.store.table_schema(tenant, table)
            if schema is not None and subject in schema.names:
                gone = await _delete(p, tenant, table, subject, values)
                counts[table] = counts.get(table, 0) + gone


async def _settle(readers: Readers, st: StreamState, end: int) -> None:
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    while asyncio.get_running_loop().time() < deadline:
        if all(offset >= end for _, offset in readers.readers_of(st.tenant, st.topic)):
            return
        await asyncio.sleep(0.05)


def _sweep_quarantine(p: Runtime, st: StreamState, subject: str, value: str) -> int:
    table = quarantine_table_of(st.schema.name)
    offsets = [o for o, raw in _quarantined(p, st.tenant, table) if _holds(raw, subject, value)]
    if not offsets:
        return 0
    return p.store.delete_in(st.tenant, table, "_offset", pa.array(offsets, pa.int64()))


def _quarantined(p: Runtime, tenant: str, table: str) -> Iterator[tuple[int, str]]:
    cursor: str | None = None
    while True:
        page = p.store.read_rows(RowQuery(tenant, table, limit=10_000, cursor=cursor))
        yield from zip(
            page.rows.column("_offset").to_pylist(), page.rows.column("raw").to_pylist(),
            strict=True,
        )  # fmt: skip
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _holds(raw: str | None, subject: str, value: str) -> bool:
    """Whether a rejected row's text (JSON, or CSV with its header line) names the subject."""
    if not raw:
        return False
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            rows = list(csv.DictReader(io.StringIO(raw)))
        except csv.Error:
            return value in raw  # neither: be safe, it may be theirs
        return any(str(r.get(subject)) == value for r in rows)
    return isinstance(row, dict) and str(row.get(subject)) == value
