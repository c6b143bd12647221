"""Cell-level conversions on whole Arrow columns: casts that isolate the bad cells,
ISO-8601 and epoch timestamps to UTC milliseconds, floats that must be finite.

A cast either succeeds for the whole column (the common case, one C call) or is split
in halves until the failing cells are found, so a bad cell costs O(log n) casts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.ingest.depth import max_depth_of
from headwater.ingest.model import CellError

TS_MS = pa.timestamp("ms", tz="UTC")
# Typed scalars built once: inferring a scalar from a Python value makes pyarrow try
# optional imports (dateutil), and a failed import is retried on every call.
FALSE = pa.scalar(False, pa.bool_())
TS_US = pa.timestamp("us", tz="UTC")
TS_NS = pa.timestamp("ns", tz="UTC")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
LEAF = 16
# Epoch numbers are rounded to whole microseconds first, so 1700000000.123 s is 123 ms.
MICROS = {"s": 1e6, "ms": 1e3, "us": 1.0}
EXPECTED = {
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "iso": "ISO-8601 text with an offset, e.g. 2026-11-21T10:00:00.123Z",
    "s": "epoch seconds (a number)",
    "ms": "epoch milliseconds (a number)",
    "us": "epoch microseconds (a number)",
    "json": "a JSON value",
}
JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}


@dataclass(frozen=True)
class Bad:
    code: str
    message: str


def wrong_type(kind: str, value: Any) -> str:
    """Say what was expected and what came, in JSON terms."""
    got = JSON_TYPES.get(type(value)) or (
        "an object" if isinstance(value, dict) else "an array" if isinstance(value, list) else None
    )
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"expected {EXPECTED[kind]}, got {got + ' ' if got else ''}{shown}"


def cast_or_null(column: pa.Array, to: pa.DataType) -> tuple[pa.Array, list[int]]:
    """Cast ``column``; cells that do not cast become null and are listed."""
    try:
        return pc.cast(column, to), []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if len(column) <= LEAF:
        pieces, failed = [], []
        for i in range(len(column)):
            try:
                pieces.append(pc.cast(column.slice(i, 1), to))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pieces.append(pa.nulls(1, type=to))
                failed.append(i)
        return pa.concat_arrays(pieces), failed
    mid = len(column) // 2
    left, left_failed = cast_or_null(column.slice(0, mid), to)
    right, right_failed = cast_or_null(column.slice(mid), to)
    return pa.concat_arrays([left, right]), left_failed + [mid + i for i in right_failed]


def ints_from_text(texts: pa.Array) -> tuple[pa.Array, list[int]]:
    """Parse integer cells; '3.0' counts as 3, as an integral JSON float would."""
    ints, failed = cast_or_null(texts, pa.int64())
    if not failed:
        return ints, []
    floats, _ = cast_or_null(texts.take(failed), pa.float64())
    values, valid = _numpy(ints)
    still: list[int] = []
    for pos, x in zip(failed, floats.to_pylist(), strict=True):
        if x is not None and math.isfinite(x) and x.is_integer() and INT64_MIN <= x < 2**63:
            values[pos], valid[pos] = int(x), True
        else:
            still.append(pos)
    return pa.array(values, type=pa.int64(), mask=~valid), still


def finite_only(column: pa.Array) -> tuple[pa.Array, list[CellError]]:
    """Null out NaN and infinities (a CSV 'nan' or an Avro double), reporting them."""
    bad = pc.invert(pc.is_finite(column)).fill_null(FALSE)
    if not pc.any(bad).as_py():
        return column, []
    positions = np.flatnonzero(bad.to_numpy(zero_copy_only=False)).tolist()
    errors = [
        CellError(p, "wrong_type", f"{column[p].as_py()} is not a finite number") for p in positions
    ]
    return pc.if_else(bad, pa.scalar(None, column.type), column), errors


def iso_to_ms(texts: pa.Array) -> tuple[pa.Array, list[CellError]]:
    """ISO-8601 text with an offset to UTC milliseconds (sub-millisecond digits floored)."""
    try:
        return pc.cast(texts, TS_MS), []
    except pa.ArrowInvalid:
        pass
    micros, failed = cast_or_null(texts, TS_US)
    values, valid = _numpy(micros.cast(pa.int64()))
    values //= 1000
    if failed:
        # Nine fractional digits only parse at nanosecond precision (years 1678-2261).
        nanos, unparsed = cast_or_null(texts.take(failed), TS_NS)
        for j, ns in enumerate(nanos.cast(pa.int64()).to_pylist()):
            if ns is not None:
                values[failed[j]], valid[failed[j]] = ns // 1_000_000, True
        failed = [failed[j] for j in unparsed]
    errors = []
    for pos in failed:
        bad = iso_problem(texts[pos].as_py())
        errors.append(CellError(pos, bad.code, bad.message))
    return pa.array(values, type=pa.int64(), mask=~valid).cast(TS_MS), errors


def iso_problem(text: str) -> Bad:
    """Why Arrow refused an ISO timestamp: a missing offset, or not ISO at all."""
    example = "write e.g. 2026-11-21T10:00:00.123Z or 2026-11-21T12:00:00+02:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return Bad("invalid_timestamp", f"{text!r} is not an ISO-8601 timestamp; {example}")
    if parsed.tzinfo is None:
        return Bad(
            "timestamp_no_zone",
            f"{text!r} has no UTC offset, so its instant is unknown; add 'Z' or an offset like '+02:00'",
        )
    return Bad("invalid_timestamp", f"{text!r} is not in a supported ISO-8601 form; {example}")


def epoch_to_ms(numbers: pa.Array, unit: str) -> tuple[pa.Array, list[CellError]]:
    """Epoch numbers (int64 or float64) in ``unit`` to UTC milliseconds."""
    values, valid = _numpy(numbers)
    if pa.types.is_integer(numbers.type):
        if unit == "s":
            fits = np.abs(values) <= INT64_MAX // 1000
            values = np.where(fits, values, 0) * 1000
        else:
            fits = np.ones(len(values), dtype=bool)
            values = values // 1000 if unit == "us" else values
        finite = fits
    else:
        finite = np.isfinite(values)
        with np.errstate(over="ignore"):  # beyond the range: inf, refused below
            micros = np.rint(np.where(finite, values, 0.0) * MICROS[unit])
        fits = np.abs(micros) < 2.0**63
        values = np.where(fits, micros, 0.0).astype(np.int64) // 1000
    errors = []
    for pos in np.flatnonzero(valid & ~(finite & fits)).tolist():
        bad = _epoch_problem(numbers[pos].as_py(), unit)
        errors.append(CellError(pos, bad.code, bad.message))
    ok = valid & finite & fits
    return pa.array(values, type=pa.int64(), mask=~ok).cast(TS_MS), errors


def epoch_value_to_ms(value: int | float, unit: str) -> int | Bad:
    """One epoch number to milliseconds, exactly as ``epoch_to_ms`` does it."""
    if type(value) is int:
        ms = value * 1000 if unit == "s" else value // 1000 if unit == "us" else value
    elif not math.isfinite(value):
        return _epoch_problem(value, unit)
    else:
        ms = round(value * MICROS[unit]) // 1000
    return ms if INT64_MIN <= ms <= INT64_MAX else _epoch_problem(value, unit)


def epoch_from_text(texts: pa.Array, unit: str) -> tuple[pa.Array, list[CellError]]:
    """Epoch cells: integers exactly, anything else numeric as a float."""
    if unit == "s":
        numbers, failed = cast_or_null(texts, pa.float64())
        column, errors = epoch_to_ms(numbers, unit)
    else:
        ints, failed = cast_or_null(texts, pa.int64())
        column, errors = epoch_to_ms(ints, unit)
        if failed:
            floats, failed_again = cast_or_null(texts.take(failed), pa.float64())
            fixed, more = epoch_to_ms(floats, unit)
            values, valid = _numpy(column.cast(pa.int64()))
            for j, ms in enumerate(fixed.cast(pa.int64()).to_pylist()):
                if ms is not None:
                    values[failed[j]], valid[failed[j]] = ms, True
            errors += [CellError(failed[e.pos], e.code, e.message) for e in more]
            failed = [failed[j] for j in failed_again]
            column = pa.array(values, type=pa.int64(), mask=~valid).cast(TS_MS)
    errors += [CellError(p, "wrong_type", wrong_type(unit, texts[p].as_py())) for p in failed]
    return column, sorted(errors, key=lambda e: e.pos)


def json_from_text(texts: pa.Array, max_depth: int) -> tuple[pa.Array, list[CellError]]:
    """CSV cells of a json field: each must be JSON text; stored compact."""
    out: list[str | None] = []
    errors: list[CellError] = []
    for pos, text in enumerate(texts.to_pylist()):
        if text is None:
            out.append(None)
            continue
        raw = text.encode()
        too_deep = raw.count(b"{") + raw.count(b"[") >= max_depth and (
            max_depth_of(np.frombuffer(raw, np.uint8)) + 1 > max_depth
        )
        if too_deep:
            errors.append(
                CellError(pos, "too_deep", f"the value nests deeper than {max_depth} levels")
            )
            out.append(None)
            continue
        try:
            out.append(msgspec.json.encode(msgspec.json.decode(raw)).decode())
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            errors.append(
                CellError(pos, "wrong_type", f"expected JSON text, got {text[:40]!r}: {exc}")
            )
            out.append(None)
    return pa.array(out, type=pa.string()), errors


def _epoch_problem(value: float, unit: str) -> Bad:
    if isinstance(value, float) and not math.isfinite(value):
        return Bad("invalid_timestamp", f"{value} is not a finite epoch number")
    return Bad(
        "timestamp_out_of_range",
        f"{value} epoch {unit} is outside the representable time range; check the unit",
    )


def _numpy(column: pa.Array) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Writable numpy values (nulls as 0) and the validity mask of a numeric column."""
    valid = column.is_valid().to_numpy(zero_copy_only=False).copy()
    zero = pa.scalar(0.0 if pa.types.is_floating(column.type) else 0, column.type)
    values = column.fill_null(zero).to_numpy(zero_copy_only=False).copy()
    return values, valid
