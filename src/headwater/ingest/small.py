"""Bodies of a few JSON rows: decoded and checked in plain Python, built into Arrow once.

An Arrow compute call costs microseconds whatever the size of its input, and the
vectorised path makes a few per field, so below a few dozen rows they cost more
than the rows do. This path gives the same answer for those bodies: the same typed
msgspec decode, then each cell is converted and checked by Python code that mirrors
the vectorised checks one for one (same order, same codes, the same message
function), and the valid rows become one Arrow struct array.

It takes only what it can answer exactly. A body it is not sure about (a row that is
not valid JSON or has a wrong type, nesting that might be too deep, a timestamp text
outside the plain ``YYYY-MM-DDTHH:MM:SS[.f]Z|±HH:MM`` form, a number outside its
exact range) makes it return None, and the caller runs the vectorised path.
Patterns (RE2 semantics) and cross-field rules run through the vectorised
functions themselves, once per request, only when the schema has them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from headwater.errors import HeadwaterError
from headwater.ingest import cells
from headwater.ingest.body import Format, as_text
from headwater.ingest.convert import ARROW_ERRORS, kind
from headwater.ingest.depth import max_depth_of
from headwater.ingest.json_decode import ROW_ERRORS, codec_for, lazy_elements
from headwater.ingest.model import DecodeLimits, RowError, ValidatedBatch
from headwater.ingest.plan import arrow_schema_of, per_schema
from headwater.ingest.validate import Ledger, check_rules, failure_message, matches
from headwater.model.schema import Field, StreamSchema

SMALL_ROWS = 32  # above this the vectorised path is cheaper (docs/benchmarks.md, Ingest)
SMALL_BODY_BYTES = 64 * 1024
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Years whose nanosecond instants fit int64 with a wide margin: 7 to 9 fractional
# digits parse only at nanosecond precision, and only in that range.
NANO_YEARS = range(1700, 2201)
ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
FROM_ISO = datetime.fromisoformat
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)
MAX_PATTERN_CACHE = 4096


class Unsure(Exception):
    """The body needs the vectorised path."""


@dataclass(frozen=True, slots=True)
class Failure:
    row: int
    field: Field | None
    code: str
    value: Any = None
    message: str | None = None


class FieldPlan:
    """One field's getter, conversion and checks, in the order the vectorised path runs them."""

    def __init__(self, schema: StreamSchema, k: int, attr: str) -> None:
        field = schema.fields[k]
        self.field = field
        self.get = attrgetter(attr)
        self.kind = kind(field)
        self.event_time = field.name == schema.event_time
        self.fill = self.event_time and schema.allow_missing_event_time
        self.enum = frozenset(field.enum) if field.enum is not None else None
        self.timestamp = field.type == "timestamp"
        self.matched: dict[str, bool] = {}  # regex verdicts by value

    def convert(self, values: list[Any]) -> list[Any]:
        """Values in their Arrow representation (timestamps as ms); raise Unsure if unsure."""
        k = self.kind
        if k in ("string", "float", "bool"):
            return values  # the typed decoder checked them; JSON floats are finite
        if k == "int":
            for v in values:
                if v is not None and not INT64_MIN <= v <= INT64_MAX:
                    raise Unsure
            return values
        if k == "iso":
            return [None if v is None else iso_ms(v) for v in values]
        if k == "json":
            try:
                return [None if v is None else msgspec.json.encode(v).decode() for v in values]
            except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
                raise Unsure from exc
        return [None if v is None else _epoch_ms(v, k) for v in values]

    def regex_verdicts(self, values: list[Any]) -> dict[str, bool | None]:
        """Whether each present value matches the pattern, by the vectorised function.

        Verdicts are remembered per value (sensor ids and states repeat), so most
        requests make no Arrow call at all.
        """
        pattern = self.field.regex
        assert pattern is not None
        seen = self.matched
        verdicts = {v: seen.get(v) for v in values if v is not None}
        missing = [v for v, ok in verdicts.items() if ok is None]
        if missing:
            found = matches(pa.array(missing, pa.string()), pattern).to_pylist()
            if len(seen) + len(missing) > MAX_PATTERN_CACHE:
                seen.clear()
            for v, ok in zip(missing, found, strict=True):
                verdicts[v] = seen[v] = ok
        return verdicts


class SmallPlan:
    """What the small path needs of one schema, built once per schema."""

    def __init__(self, schema: StreamSchema) -> None:
        self.codec = codec_for(schema)
        # ``RowCodec`` names the struct attributes by field position.
        self.fields = [FieldPlan(schema, k, f"f{k}") for k in range(len(schema.fields))]
        self.struct = pa.struct(list(arrow_schema_of(schema)))


plan_for: Callable[[StreamSchema], SmallPlan] = per_schema(SmallPlan)


def decode_small(
    data: bytes, fmt: Format, schema: StreamSchema, limits: DecodeLimits, now_ms: int
) -> ValidatedBatch | None:
    """Decode and validate a small JSON or NDJSON body, or None to use the vectorised path.

    ``data`` is the body after Content-Encoding. Request-level problems found here
    raise the same errors as the vectorised decoders (both start with ``as_text``).
    """
    text = as_text(data)
    plan = plan_for(schema)
    rows = _ndjson_rows(text, plan, limits) if fmt == "ndjson" else _json_rows(text, plan, limits)
    if rows is None:
        return None
    structs, raw = rows
    try:
        return _validate(structs, raw, plan, schema, limits, now_ms)
    except Unsure:
        return None


def row_texts(
    data: bytes, fmt: Format, schema: StreamSchema, limits: DecodeLimits
) -> list[bytes] | None:
    """Each row's JSON text, one line each, if this path reads ``data`` cleanly; else None.

    Small requests that arrive together are joined into one NDJSON body (see
    ``coalesce``). Only a single JSON object or NDJSON qualifies, and only when every
    row decodes as the stream's types: a body the small path is unsure about, or one
    with a request-level problem, is answered on its own. A row's text never holds a
    line break once it is on one line (JSON strings cannot hold one), so the breaks of
    a pretty-printed object become spaces.
    """
    try:
        text = as_text(data)
    except HeadwaterError:
        return None
    plan = plan_for(schema)
    if fmt == "ndjson":
        if _ndjson_rows(text, plan, limits) is None:
            return None
        return [line.strip() for line in text.split(b"\n") if line.strip(b" \t\r")]
    if fmt != "json" or text.lstrip()[:1] != b"{" or _json_rows(text, plan, limits) is None:
        return None
    return [text.strip().replace(b"\r", b" ").replace(b"\n", b" ")]


def _ndjson_rows(
    data: bytes, plan: SmallPlan, limits: DecodeLimits
) -> tuple[list[Any], Callable[[int], str]] | None:
    lines = [line for line in data.split(b"\n", SMALL_ROWS + 1) if line.strip(b" \t\r")]
    if not lines or len(lines) > min(SMALL_ROWS, limits.max_rows) or b"\n" in lines[-1]:
        return None
    if not _shallow(data, lines, limits.max_depth):
        return None
    try:
        structs = plan.codec.line.decode_lines(data)
    except ROW_ERRORS:
        return None
    # Two objects on one line decode as two rows: the vectorised path sorts that out.
    if len(structs) != len(lines):
        return None
    return structs, lambda i: lines[i].decode("utf-8", "replace").strip()


def _json_rows(
    data: bytes, plan: SmallPlan, limits: DecodeLimits
) -> tuple[list[Any], Callable[[int], str]] | None:
    lead = data.lstrip()[:1]
    if lead == b"{":
        if not _shallow(data, [data], limits.max_depth):
            return None
        try:
            row = plan.codec.line.decode(data)
        except ROW_ERRORS:
            return None
        return [row], lambda _: data.decode("utf-8", "replace").strip()
    if lead != b"[":
        return None
    try:
        structs = plan.codec.body.decode(data)
    except ROW_ERRORS:
        return None
    # The body is small, so decoding first costs little; an empty or too long array
    # gets the vectorised path's answer.
    if not isinstance(structs, list) or not 0 < len(structs) <= min(SMALL_ROWS, limits.max_rows):
        return None
    # As ``decode_json``: each element holds a '{', so none holds more brackets than
    # this; if that is not enough, measure (the array's own level does not count).
    openers = data.count(b"{") + data.count(b"[")
    if openers - len(structs) > limits.max_depth and _depth(data) - 1 > limits.max_depth:
        return None
    return structs, lazy_elements(data)


def _shallow(data: bytes, lines: Sequence[bytes], max_depth: int) -> bool:
    """Whether no line nests deeper than ``max_depth``; its bracket count bounds its depth."""
    if data.count(b"{") + data.count(b"[") <= max_depth:
        return True
    return all(
        line.count(b"{") + line.count(b"[") <= max_depth or _depth(line) <= max_depth
        for line in lines
    )


def _depth(text: bytes) -> int:
    return max_depth_of(np.frombuffer(text, np.uint8))


def _validate(
    structs: list[Any],
    raw: Callable[[int], str],
    plan: SmallPlan,
    schema: StreamSchema,
    limits: DecodeLimits,
    now_ms: int,
) -> ValidatedBatch:
    n = len(structs)
    failed: dict[int, Failure] = {}
    columns = []
    earliest, latest = limits.min_ts_ms, now_ms + limits.max_future_ms
    for fp in plan.fields:
        values = fp.convert(list(map(fp.get, structs)))
        _check(fp, values, failed, now_ms, earliest, latest)
        columns.append(values)
    ok = [i for i in range(n) if i not in failed] if failed else list(range(n))
    tuples = list(zip(*columns, strict=True))
    if failed:
        tuples = [tuples[i] for i in ok]
    try:
        table = pa.Table.from_batches(
            [pa.RecordBatch.from_struct_array(pa.array(tuples, type=plan.struct))]
        )
    except ARROW_ERRORS as exc:
        raise Unsure from exc
    if schema.rules and ok:
        table, ok = _apply_rules(table, ok, schema, failed, now_ms, limits.rule_timeout_s)
    errors = [_row_error(f, raw, limits, now_ms) for f in sorted(failed.values(), key=_row)]
    return ValidatedBatch(
        valid=table, valid_rows=pa.array(ok, type=pa.int64()), errors=errors, total_rows=n
    )


def _row(f: Failure) -> int:
    return f.row


def _row_error(
    f: Failure, raw: Callable[[int], str], limits: DecodeLimits, now_ms: int
) -> RowError:
    if f.field is None:  # a rule: its message, as ``validate`` words it
        return RowError(f.row, None, f.code, f.message or f.code, raw(f.row))
    message = failure_message(f.code, f.field, f.value, limits, now_ms)
    return RowError(f.row, f.field.name, f.code, message, raw(f.row))


def _check(
    fp: FieldPlan,
    values: list[Any],
    failed: dict[int, Failure],
    now_ms: int,
    earliest: int,
    latest: int,
) -> None:
    """The vectorised ``_check_field``, value by value; the first failure of a row stays."""
    field = fp.field
    low, high, enum, max_length = field.min, field.max, fp.enum, field.max_length
    verdicts = fp.regex_verdicts(values) if field.regex is not None else None
    for i, v in enumerate(values):
        if v is None:
            if fp.fill:
                v = values[i] = now_ms
            else:
                if i not in failed and (fp.event_time or field.required):
                    missing = "missing_event_time" if fp.event_time else "required"
                    failed[i] = Failure(i, field, missing)
                continue
        if i in failed:
            continue
        code: str | None = None
        if low is not None and v < low:
            code = "below_min"
        elif high is not None and v > high:
            code = "above_max"
        elif enum is not None and v not in enum:
            code = "not_in_enum"
        elif verdicts is not None and not verdicts[v]:
            code = "regex_mismatch"
        elif max_length is not None and len(v) > max_length:
            code = "too_long"
        elif fp.timestamp and not earliest <= v <= latest:
            code = "timestamp_out_of_range"
        if code is not None:
            failed[i] = Failure(i, field, code, v)


def _apply_rules(
    table: pa.Table,
    ok: list[int],
    schema: StreamSchema,
    failed: dict[int, Failure],
    now_ms: int,
    timeout_s: float,
) -> tuple[pa.Table, list[int]]:
    """Run the schema's rules on the rows that passed the field checks, as ``validate`` does."""
    ledger = Ledger(table.num_rows)
    check_rules(table, schema, ledger, now_ms, timeout_s)
    still = ledger.ok()
    if still.all():
        return table, ok
    for pos in (~still).nonzero()[0].tolist():
        code = ledger.codes[ledger.code[pos]]
        failed[ok[pos]] = Failure(ok[pos], None, code, message=ledger.notes.get(pos))
    return table.filter(pa.array(still)), [r for r, keep in zip(ok, still, strict=True) if keep]


def _epoch_ms(v: Any, unit: str) -> int:
    """An epoch number to ms exactly as ``cells.epoch_to_ms`` does it; Unsure out of range."""
    if type(v) is int:
        if not INT64_MIN <= v <= INT64_MAX:
            raise Unsure
        ms = v * 1000 if unit == "s" else v // 1000 if unit == "us" else v
    else:  # a float ("s" fields); the decoder refuses non-finite numbers
        scaled = v * cells.MICROS[unit]
        if not -(2.0**62) < scaled < 2.0**62:
            raise Unsure
        ms = round(scaled) // 1000  # round half to even, as numpy's rint
    if not INT64_MIN <= ms <= INT64_MAX:
        raise Unsure
    return ms


def iso_ms(text: str) -> int:
    """Plain ISO-8601 text with an offset to UTC ms, as Arrow parses it; Unsure otherwise.

    Only ``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)`` is taken, a form both parsers read
    the same way (the C ``fromisoformat`` checks the ranges). Fractional digits are
    floored to the millisecond, like the vectorised path.
    """
    if ISO.fullmatch(text) is None or (
        text[-1] != "Z" and (text[-5:-3] > "23" or text[-2:] > "59")
    ):
        raise Unsure
    try:
        when = FROM_ISO(text)
    except ValueError as exc:
        raise Unsure from exc
    digits = len(text) - 20 - (1 if text[-1] == "Z" else 6)  # after "YYYY-MM-DDTHH:MM:SS."
    if digits > 6 and int(text[:4]) not in NANO_YEARS:
        raise Unsure
    return (when - EPOCH) // ONE_MS
