"""Typed Arrow columns from decoded values, vectorised wherever the input allows.

Three ways in, one result (the typed column, null where a cell failed, plus the
failing cells):

- ``from_checked`` / ``from_checked_arrow``: values a typed decoder (msgspec) already
  checked, as Python values or already in Arrow; only the Arrow build and the
  timestamp conversion remain.
- ``from_values``: arbitrary Python values (JSON rows read one by one, Avro records).
  A C-level strict check (``msgspec.convert``) passes clean columns straight through;
  only a column that fails it is walked value by value.
- ``from_text``: CSV cells, parsed by the field's type with Arrow casts.

The same value converts the same way on every route: an int field takes JSON ints
and integral floats (never bools or numeric strings), a float field takes ints, an
ISO timestamp is whatever Arrow's ISO-8601 parser accepts with an offset, and epoch
numbers are rounded to whole microseconds before being floored to milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pyarrow as pa

from headwater.ingest import cells
from headwater.ingest.cells import TS_MS, Bad
from headwater.ingest.depth import value_depth
from headwater.ingest.model import CellError
from headwater.model.schema import ARROW_TYPES, Field

Converted = tuple[pa.Array, list[CellError]]

# What a typed decoder or ``msgspec.convert`` checks a field's values against.
CHECK_TYPES: dict[str, Any] = {
    "string": str,
    "int": int,
    "float": float,
    "bool": bool,
    "iso": str,
    "s": float,
    "ms": int,
    "us": int,
    "json": Any,
}
CHECK_LISTS: dict[str, Any] = {k: list[t | None] for k, t in CHECK_TYPES.items()}  # type: ignore[valid-type]
# The Arrow type of the checked values, before timestamps are converted.
RAW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "iso": pa.string(),
    "s": pa.float64(),
    "ms": pa.int64(),
    "us": pa.int64(),
}
ARROW_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError, UnicodeError)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def kind(field: Field) -> str:
    """The conversion kind: the field type, or the time unit for timestamps."""
    return field.unit if field.type == "timestamp" else field.type


def from_checked(values: Sequence[Any], field: Field) -> Converted:
    """Build a column from values a typed decoder has already checked."""
    k = kind(field)
    if k == "json":
        return _json_values(values)
    try:
        raw = pa.array(values, type=RAW_TYPES[k])
    except ARROW_ERRORS:  # integers beyond int64 pass the decoder's ``int`` check
        return _value_by_value(values, field)
    return _finish(raw, k)


def from_checked_arrow(raw: pa.Array, field: Field) -> Converted:
    """Finish a column a typed JSON decoder checked and Arrow already holds in its raw type.

    JSON cannot express NaN or infinities (the decoder refuses 1e400), so floats
    skip the finiteness check.
    """
    k = kind(field)
    return (raw, []) if k == "float" else _finish(raw, k)


def from_values(values: Sequence[Any], field: Field, max_depth: int | None = None) -> Converted:
    """Build a column from arbitrary Python values, checking each one's type.

    ``max_depth`` bounds the nesting of json values (an event's own level counts
    as one); leave it None when the source text was already measured.
    """
    k = kind(field)
    if k == "json":
        return _json_values(values, max_depth)
    try:
        checked = msgspec.convert(values, CHECK_LISTS[k])
        raw = pa.array(checked, type=RAW_TYPES[k])
    except (msgspec.ValidationError, *ARROW_ERRORS):
        return _value_by_value(values, field)
    return _finish(raw, k)


def from_text(texts: pa.Array, field: Field, max_depth: int) -> Converted:
    """Parse CSV cells (a string column, null for empty cells) by the field's type."""
    k = kind(field)
    if k in ("string", "iso"):
        return _finish(texts, k)
    if k == "json":
        return cells.json_from_text(texts, max_depth)
    if k in ("s", "ms", "us"):
        return cells.epoch_from_text(texts, k)
    if k == "float":
        parsed, failed = cells.cast_or_null(texts, pa.float64())
    elif k == "bool":
        parsed, failed = cells.cast_or_null(texts, pa.bool_())
    else:
        parsed, failed = cells.ints_from_text(texts)
    column, errors = _finish(parsed, k)
    bad = [CellError(p, "wrong_type", cells.wrong_type(k, texts[p].as_py())) for p in failed]
    return column, sorted(bad + errors, key=lambda e: e.pos)


def _finish(raw: pa.Array, k: str) -> Converted:
    if k == "float":
        return cells.finite_only(raw)
    if k == "iso":
        return cells.iso_to_ms(raw)
    if k in ("s", "ms", "us"):
        return cells.epoch_to_ms(raw, k)
    return raw, []


def _value_by_value(values: Sequence[Any], field: Field) -> Converted:
    k = kind(field)
    check = CHECKS[k]
    clean: list[Any] = []
    errors: list[CellError] = []
    for pos, value in enumerate(values):
        out = None if value is None else check(value)
        if isinstance(out, Bad):
            errors.append(CellError(pos, out.code, out.message))
            out = None
        clean.append(out)
    if k in ("s", "ms", "us"):
        return pa.array(clean, type=pa.int64()).cast(TS_MS), errors
    column, more = _finish(pa.array(clean, type=RAW_TYPES[k]), k)
    return column, sorted(errors + more, key=lambda e: e.pos)


def _json_values(values: Sequence[Any], max_depth: int | None = None) -> Converted:
    texts: list[str | None] = []
    errors: list[CellError] = []
    for pos, value in enumerate(values):
        if value is None:
            texts.append(None)
            continue
        if max_depth is not None and value_depth(value) + 1 > max_depth:
            errors.append(
                CellError(pos, "too_deep", f"the value nests deeper than {max_depth} levels")
            )
            texts.append(None)
            continue
        try:
            texts.append(msgspec.json.encode(value).decode())
        except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
            errors.append(
                CellError(pos, "wrong_type", f"the value cannot be stored as JSON: {exc}")
            )
            texts.append(None)
    return pa.array(texts, type=ARROW_TYPES["json"]), errors


def _check_string(value: Any) -> Any:
    if type(value) is not str:
        return Bad("wrong_type", cells.wrong_type("string", value))
    try:
        value.encode()
    except UnicodeError:
        return Bad("wrong_type", "the text is not valid Unicode (lone surrogate); fix its escapes")
    return value


def _check_int(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        return Bad("wrong_type", cells.wrong_type("int", value))
    if not cells.INT64_MIN <= value <= cells.INT64_MAX:
        return Bad("wrong_type", f"{value} does not fit a 64-bit integer")
    return value


def _check_float(value: Any) -> Any:
    if type(value) is int:
        try:
            return float(value)
        except OverflowError:
            return Bad("wrong_type", f"{value} is too large for a 64-bit float")
    if type(value) is not float:
        return Bad("wrong_type", cells.wrong_type("float", value))
    return value


def _check_bool(value: Any) -> Any:
    return value if type(value) is bool else Bad("wrong_type", cells.wrong_type("bool", value))


def _check_iso(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return Bad("timestamp_no_zone", "the timestamp has no time zone; send it in UTC")
        return value.isoformat()
    return value if type(value) is str else Bad("wrong_type", cells.wrong_type("iso", value))


def _epoch_checker(unit: str) -> Any:
    def check(value: Any) -> Any:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                return Bad("timestamp_no_zone", "the timestamp has no time zone; send it in UTC")
            return (value - EPOCH) // timedelta(milliseconds=1)
        if type(value) not in (int, float):
            return Bad("wrong_type", cells.wrong_type(unit, value))
        return cells.epoch_value_to_ms(value, unit)

    return check


CHECKS: dict[str, Any] = {
    "string": _check_string,
    "int": _check_int,
    "float": _check_float,
    "bool": _check_bool,
    "iso": _check_iso,
    "s": _epoch_checker("s"),
    "ms": _epoch_checker("ms"),
    "us": _epoch_checker("us"),
}
