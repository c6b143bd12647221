"""Arrow rows as a JSON array, built by DuckDB in C++ rather than as Python objects.

A live feed of an ``emit = 'changes'`` pipeline carries every changed row of every
commit (thousands of rows per commit at 100k events/s over 10k devices). ``to_pylist``
+ orjson costs ~6 µs a row, all of it holding the GIL; DuckDB's ``to_json`` builds the
same text in ~0.9 µs a row (plus ~1.5 ms a query) with the GIL released, so tables
under ``SMALL_ROWS`` rows still go the Python way. The text matches the HTTP API's JSON
(``headwater.query.json_values``): timestamps as ISO-8601 in UTC with ``Z`` (microseconds only
when not zero), NaN and infinities as ``null``, integer decimals past 64 bits as exact
text. A table holding any other type is encoded the HTTP API's way, row by row.

>>> import pyarrow as pa
>>> rows = pa.table({"k": ["a"], "t": pa.array([1_500], pa.timestamp("ms", tz="UTC")),
...                  "x": [float("nan")]})
>>> JsonRows().encode(rows)
b'[{"k":"a","t":"1970-01-01T00:00:01.500000Z","x":null}]'
"""

from __future__ import annotations

import duckdb
import numpy as np
import orjson
import pyarrow as pa

from headwater.query.json_values import JSON_OPTS, json_default
from headwater.query.runner import connect_locked

VIEW = "_hw_json_rows"
ORDER = "_hw_json_row"
ISO = "%Y-%m-%dT%H:%M:%S"
SMALL_ROWS = 256  # fewer rows cost less in Python than a DuckDB query's ~1.5 ms


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _expr(name: str, t: pa.DataType) -> str | None:
    """The SQL that gives column ``name`` its JSON value, or None if DuckDB's is not ours."""
    c = _quote(name)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
        return c
    if pa.types.is_integer(t) or pa.types.is_date32(t):
        return c
    if pa.types.is_floating(t) and not pa.types.is_float16(t):
        return f"CASE WHEN isfinite({c}) THEN {c} END"
    if pa.types.is_timestamp(t) and t.unit in ("s", "ms", "us"):
        ts = c if t.tz else f"({c} AT TIME ZONE 'UTC')"  # naive times are UTC (OPT_NAIVE_UTC)
        return (
            f"CASE WHEN epoch_us({ts}) % 1000000 = 0 THEN strftime({ts}, '{ISO}Z') "
            f"ELSE strftime({ts}, '{ISO}.%fZ') END"
        )
    if pa.types.is_decimal(t) and t.scale == 0 and t.precision <= 38:
        return (
            f"CASE WHEN abs({c}) < 9223372036854775808 THEN to_json({c}::HUGEINT) "
            f"ELSE to_json({c}::VARCHAR) END"
        )
    return None


class JsonRows:
    """Encodes tables as JSON arrays; one instance per thread (it owns a DuckDB connection)."""

    def __init__(self) -> None:
        self._db = connect_locked(":memory:", memory_limit="256MB", threads=1)
        self._sql: dict[pa.Schema, str | None] = {}

    def encode(self, rows: pa.Table) -> bytes:
        if rows.schema not in self._sql:
            if len(self._sql) >= 64:
                self._sql.clear()
            self._sql[rows.schema] = _query(rows.schema)
        sql = self._sql[rows.schema]
        if sql is None or rows.num_rows < SMALL_ROWS:
            return _python(rows)
        index = pa.array(np.arange(rows.num_rows, dtype=np.int64))
        self._db.register(VIEW, rows.append_column(ORDER, index))
        try:
            found = self._db.execute(sql).fetchall()
        except duckdb.Error:  # e.g. duplicate column names: the slow way still answers
            return _python(rows)
        finally:
            self._db.unregister(VIEW)
        return str(found[0][0] if found else "[]").encode()

    def close(self) -> None:
        self._db.close()


def _python(rows: pa.Table) -> bytes:
    return orjson.dumps(rows.to_pylist(), option=JSON_OPTS, default=json_default)


def _query(schema: pa.Schema) -> str | None:
    fields = []
    for f in schema:
        expr = _expr(f.name, f.type)
        if expr is None or f.name == ORDER:
            return None
        fields.append(f"{_quote(f.name)} := {expr}")
    row = f"struct_pack({', '.join(fields)})"
    return f"SELECT to_json(list({row} ORDER BY {ORDER}))::VARCHAR FROM {VIEW}"
