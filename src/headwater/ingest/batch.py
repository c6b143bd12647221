"""Decode a request body straight into Arrow and validate it: the ingest entry point.

>>> from headwater.model.schema import schema_from_dict
>>> schema = schema_from_dict({"name": "readings", "event_time": "ts", "fields": [
...     {"name": "device_id", "type": "string", "required": True},
...     {"name": "ts", "type": "timestamp"},
...     {"name": "temperature", "type": "float", "min": -50, "max": 150}]})
>>> limits = DecodeLimits(max_body_bytes=1 << 20, max_rows=1000, max_depth=32,
...                       min_ts_ms=0, max_future_ms=86_400_000, max_errors=100)
>>> body = (b'{"device_id": "d1", "ts": "2026-11-21T10:00:00Z", "temperature": 21.5}\\n'
...         b'{"device_id": "d2", "ts": "2026-11-21T10:00:01Z", "temperature": 999}\\n')
>>> batch = decode_and_validate(body, "application/x-ndjson", None, schema, limits,
...                             now_ms=1_795_255_300_000)
>>> batch.valid.column("device_id").to_pylist(), [(e.row, e.code) for e in batch.errors]
(['d1'], [(1, 'above_max')])
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from headwater.ingest.avro_decode import decode_avro
from headwater.ingest.body import Format, inflate, media_format
from headwater.ingest.csv_decode import decode_csv
from headwater.ingest.json_decode import decode_json, decode_ndjson
from headwater.ingest.model import Decoded, DecodeLimits, RowError, ValidatedBatch
from headwater.ingest.pii import apply_pii
from headwater.ingest.small import SMALL_BODY_BYTES, decode_small
from headwater.ingest.validate import validate
from headwater.model.schema import StreamSchema

__all__ = ["DecodeLimits", "RowError", "ValidatedBatch", "decode_and_validate"]

Decoder = Callable[[bytes, StreamSchema, DecodeLimits], Decoded]
DECODERS: dict[Format, Decoder] = {
    "json": decode_json,
    "ndjson": decode_ndjson,
    "csv": decode_csv,
    "avro": decode_avro,
}
SMALL_FORMATS = ("json", "ndjson")


def decode_and_validate(
    body: bytes,
    content_type: str,
    content_encoding: str | None,
    schema: StreamSchema,
    limits: DecodeLimits,
    now_ms: int,
) -> ValidatedBatch:
    """Decode ``body`` by its Content-Type into the stream's Arrow schema and validate it.

    Request-level problems (unknown media type or encoding, a body that is not
    UTF-8, not JSON at all, empty, too large or with too many rows, a CSV header
    naming no field, a damaged Avro container) raise a ``HeadwaterError`` with a
    stable code. A bad row never rejects the others: it becomes a ``RowError``.
    ``now_ms`` is the receive time: it bounds future timestamps and fills a missing
    event time when the schema allows that.

    JSON bodies of a few rows take a plain-Python path (``small``) that gives the
    same answer without the fixed cost of Arrow compute calls.
    """
    fmt = media_format(content_type)
    data = inflate(body, content_encoding, limits.max_body_bytes, limits.max_gzip_members)
    batch = None
    if fmt in SMALL_FORMATS and len(data) <= SMALL_BODY_BYTES:
        batch = decode_small(data, fmt, schema, limits, now_ms)
    if batch is None:
        batch = decode_vectorized(data, fmt, schema, limits, now_ms)
    header = data.split(b"\n", 1)[0].decode("utf-8", "replace") if fmt == "csv" else None
    return apply_pii(batch, schema, limits.pii_key, header)


def decode_vectorized(
    data: bytes, fmt: Format, schema: StreamSchema, limits: DecodeLimits, now_ms: int
) -> ValidatedBatch:
    """Decode and validate whole columns at once; ``data`` is the body after Content-Encoding."""
    decoded = DECODERS[fmt](data, schema, limits)
    verdict = validate(decoded, schema, limits, now_ms)
    problems = sorted([*decoded.problems, *verdict.failures], key=lambda p: p.row)
    errors = [RowError(p.row, p.field, p.code, p.message, decoded.raw(p.row)) for p in problems]
    return ValidatedBatch(
        valid=verdict.valid,
        valid_rows=pa.array(verdict.valid_rows, type=pa.int64()),
        errors=errors,
        total_rows=decoded.total_rows,
    )
