"""Processing time: ``_received_at``, when the server received a row, as a column.

Every stream row carries ``_received_ms`` (epoch ms, set at ingest and kept in the log).
A pipeline that names ``_received_at`` reads it as ``timestamp[ms, UTC]``, so it can
select it, filter on it and window on it (``TUMBLE(readings, _received_at, ...)``):
processing-time windows, which group rows by arrival. Pipelines that do not name it do
not see it (``SELECT *`` keeps its columns).

>>> import pyarrow as pa
>>> wants_received_at("SELECT count(*) FROM TUMBLE(r, _received_at, INTERVAL '1 minute')")
True
>>> wants_received_at("SELECT '_received_at' FROM r")
False
>>> rows = pa.table({"x": [1], RECEIVED_MS: pa.array([60_000], pa.int64())})
>>> as_received_at(rows).schema.field(RECEIVED_AT).type
TimestampType(timestamp[ms, tz=UTC])
"""

from __future__ import annotations

import pyarrow as pa
from sqlglot import TokenType

from headwater.engine.sql.text import tokenize

RECEIVED_AT = "_received_at"
RECEIVED_MS = "_received_ms"
RECEIVED_TYPE = pa.timestamp("ms", tz="UTC")
_NAMES = (TokenType.VAR, TokenType.IDENTIFIER)


def wants_received_at(sql: str) -> bool:
    """Whether the pipeline's SQL names ``_received_at`` (as a column, not in a string)."""
    if RECEIVED_AT not in sql.lower():
        return False
    return any(t.token_type in _NAMES and t.text.lower() == RECEIVED_AT for t in tokenize(sql))


def with_received_at(sql: str, schema: pa.Schema) -> pa.Schema:
    """The schema a pipeline reads: the stream's, plus ``_received_at`` if it names it."""
    if RECEIVED_AT in schema.names or not wants_received_at(sql):
        return schema
    return schema.append(pa.field(RECEIVED_AT, RECEIVED_TYPE))


def reading_schema(stream: pa.Schema, pipeline: pa.Schema) -> pa.Schema:
    """What to read from the log for ``pipeline``: ``_received_ms`` stands for ``_received_at``."""
    if RECEIVED_AT not in pipeline.names:
        return stream
    return stream.append(pa.field(RECEIVED_MS, pa.int64()))


def as_received_at(rows: pa.Table) -> pa.Table:
    """``_received_ms`` (int64) turned into ``_received_at`` (timestamp[ms, UTC])."""
    if RECEIVED_MS not in rows.schema.names:
        return rows
    i = rows.schema.get_field_index(RECEIVED_MS)
    column = rows.column(i).cast(pa.int64()).cast(RECEIVED_TYPE)
    return rows.set_column(i, pa.field(RECEIVED_AT, RECEIVED_TYPE), column)
