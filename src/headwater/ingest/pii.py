"""Personal data fields, handled at ingest so the value is never stored.

A field declared ``"pii": "mask" | "hash" | "drop"`` is transformed right after
validation (so constraints such as a regex still check the real value), in the rows that
are stored and in the raw text of rows that are quarantined:

- ``drop``: the value becomes null.
- ``mask``: all but the last 4 characters become ``*`` (values of 8 characters or fewer
  are masked whole): ``"4111111111111111"`` → ``"************1111"``.
- ``hash``: ``"sha256:" + hex(sha256(key + value))`` with the server's secret key (kept
  in the data dir), so equal values still group and join but cannot be read back or
  guessed without the key. Hashing an already hashed value leaves it as it is, so a
  replayed row is not hashed twice.

>>> import pyarrow as pa
>>> mask(pa.array(["4111111111111111", "short", None])).to_pylist()
['************1111', '*****', None]
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.operators.query import connect
from headwater.ingest.model import RowError, ValidatedBatch
from headwater.model.schema import StreamSchema

HASH_PREFIX = "sha256:"
HASHED = r"^sha256:[0-9a-f]{64}$"
KEEP_LAST = 4
WITHHELD = "[raw row withheld: it may hold personal data of a pii field]"


def pii_fields(schema: StreamSchema) -> dict[str, str]:
    return {f.name: f.pii for f in schema.fields if f.pii is not None}


def apply_pii(
    batch: ValidatedBatch, schema: StreamSchema, key: bytes, csv_header: str | None = None
) -> ValidatedBatch:
    """``batch`` with every pii field transformed, in its rows and its rejected rows' text
    (JSON rows, or CSV lines read with the body's ``csv_header``)."""
    rules = pii_fields(schema)
    if not rules:
        return batch
    valid = batch.valid
    for name, rule in rules.items():
        i = valid.schema.get_field_index(name)
        valid = valid.set_column(i, name, transform(valid.column(name), rule, key))
    columns = next(csv.reader([csv_header])) if csv_header is not None else None
    errors = [replace(e, raw=_scrub(e.raw, rules, key, columns)) for e in batch.errors]
    return replace(batch, valid=valid, errors=errors)


def transform(values: pa.Array | pa.ChunkedArray, rule: str, key: bytes) -> pa.Array:
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if rule == "drop":
        return pa.nulls(len(arr), arr.type)
    if rule == "mask":
        return mask(arr)
    return hash_values(arr, key)


def mask(values: pa.Array) -> pa.Array:
    length = pc.utf8_length(values)
    keep = pc.if_else(pc.greater(length, 2 * KEEP_LAST), KEEP_LAST, 0)
    stars = pc.binary_repeat("*", pc.subtract(length, keep))
    tail = pc.utf8_slice_codeunits(values, start=-KEEP_LAST)
    tail = pc.if_else(pc.equal(keep, 0), "", tail)
    return pc.binary_join_element_wise(stars, tail, "")


def hash_values(values: pa.Array, key: bytes) -> pa.Array:
    """Keyed SHA-256 of each value, in DuckDB (vectorized); hashed values stay as they are."""
    con = connect()
    try:
        con.register("__hw_pii", pa.table({"v": values.cast(pa.string())}))
        out = con.sql(
            "SELECT CASE WHEN regexp_full_match(v, $1) THEN v "
            "ELSE $2 || sha256($3 || v) END FROM __hw_pii",
            params=[HASHED, HASH_PREFIX, key.hex()],
        ).to_arrow_table()
    finally:
        con.close()
    return out.column(0).combine_chunks().cast(pa.string())


def _scrub(raw: str, rules: dict[str, str], key: bytes, csv_columns: list[str] | None) -> str:
    """A rejected row's text with its pii fields transformed; withheld if it cannot be read."""
    if csv_columns is not None:
        return _scrub_csv(raw, rules, key, csv_columns)
    try:
        row = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return WITHHELD
    if not isinstance(row, dict):
        return WITHHELD
    _scrub_values(row, rules, key)
    return orjson.dumps(row).decode()


def _scrub_csv(raw: str, rules: dict[str, str], key: bytes, columns: list[str]) -> str:
    try:
        cells = next(csv.reader([raw]))
    except (csv.Error, StopIteration):
        return WITHHELD
    if len(cells) != len(columns):
        return WITHHELD
    row: dict[str, object] = dict(zip(columns, cells, strict=True))
    _scrub_values(row, rules, key)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if v is None else v for v in row.values()])
    return out.getvalue()


def _scrub_values(row: dict[str, object], rules: dict[str, str], key: bytes) -> None:
    for name, rule in rules.items():
        value = row.get(name)
        if value is None:
            continue
        if rule in ("mask", "hash") and not isinstance(value, str):
            row[name] = None  # not a string: it could not be transformed, so it is dropped
            continue
        row[name] = transform(pa.array([value]), rule, key)[0].as_py()


__all__ = ["RowError", "apply_pii", "pii_fields"]
