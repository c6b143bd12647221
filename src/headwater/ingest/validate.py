"""Vectorised validation of decoded columns against a stream schema.

Each check is an Arrow compute call over a whole column: first a cheap aggregate
(null count, min/max, true count), and a per-row mask only when some row fails. A
ledger keeps, per row, the first failure in this order: fields in schema order,
and within a field: its value could not be read, missing (``required``, or
``missing_event_time`` for the event-time field, which is filled with the receive
time instead when the schema allows), min, max, enum, regex, max_length, timestamp
range; then the schema's rules in order. Only rows that failed are looked at one by
one, to word their messages.

Regexes run as RE2 (``pc.match_substring_regex``) and match anywhere in the value,
like JSON Schema's ``pattern``; anchor them with ``^...$`` for a full match. A
pattern RE2 cannot run (backreferences, lookaround) falls back to Python's ``re``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.ingest import rules
from headwater.ingest.model import Decoded, DecodeLimits, Problem, RowIndex
from headwater.ingest.plan import arrow_schema_of
from headwater.model.schema import Field, StreamSchema
from headwater.model.time import ms_to_datetime

Mask = np.ndarray[Any, np.dtype[np.bool_]]
TS_MS = pa.timestamp("ms", tz="UTC")
RULES = -1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# Scalars are typed Arrow scalars: inferring one from a Python value makes pyarrow
# try optional imports, and a failed import is retried on every call.
FALSE = pa.scalar(False, pa.bool_())


@dataclass(frozen=True)
class Verdict:
    valid: pa.Table
    valid_rows: RowIndex
    failures: list[Problem]


class Ledger:
    """The first failing check of each row."""

    def __init__(self, n: int) -> None:
        self.code = np.zeros(n, dtype=np.int32)  # 0: no failure yet
        self.field = np.zeros(n, dtype=np.int32)
        self.codes = [""]
        self.notes: dict[int, str] = {}

    def mark(self, mask: Mask, field: int, code: str) -> None:
        new = mask & (self.code == 0)
        if new.any():
            self.code[new] = self._index(code)
            self.field[new] = field

    def mark_one(self, pos: int, field: int, code: str, message: str) -> None:
        if self.code[pos] == 0:
            self.code[pos] = self._index(code)
            self.field[pos] = field
            self.notes[pos] = message

    def ok(self) -> Mask:
        open_rows: Mask = self.code == 0
        return open_rows

    def _index(self, code: str) -> int:
        if code not in self.codes:
            self.codes.append(code)
        return self.codes.index(code)


def validate(decoded: Decoded, schema: StreamSchema, limits: DecodeLimits, now_ms: int) -> Verdict:
    """Check every decoded row; return the valid rows and the first failure of the others."""
    n = len(decoded.rows)
    ledger = Ledger(n)
    columns = list(decoded.columns)
    for k, field in enumerate(schema.fields):
        for err in decoded.cell_errors[k]:
            ledger.mark_one(err.pos, k, err.code, err.message)
        columns[k] = _check_field(columns[k], field, k, schema, ledger, limits, now_ms)
    table = pa.Table.from_arrays(columns, schema=arrow_schema_of(schema))
    if schema.rules and n:
        check_rules(table, schema, ledger, now_ms, limits.rule_timeout_s)
    ok = ledger.ok()
    if ok.all():
        return Verdict(table, decoded.rows, [])
    failures = _failures(ledger, table, schema, decoded.rows, limits, now_ms)
    return Verdict(table.filter(pa.array(ok)), decoded.rows[ok], failures)


def _check_field(
    column: pa.Array,
    field: Field,
    k: int,
    schema: StreamSchema,
    ledger: Ledger,
    limits: DecodeLimits,
    now_ms: int,
) -> pa.Array:
    # Each check first asks a cheap aggregate (null count, min/max, true count) and
    # builds a per-row mask only when some row fails: valid batches skip the masks.
    nulls = column.null_count
    if field.name == schema.event_time and nulls:
        if schema.allow_missing_event_time:
            column, nulls = column.fill_null(pa.scalar(now_ms, TS_MS)), 0
        else:
            ledger.mark(_mask(column.is_null()), k, "missing_event_time")
    elif field.required and nulls:
        ledger.mark(_mask(column.is_null()), k, "required")
    present = len(column) - nulls
    if present == 0:
        return column
    if field.min is not None or field.max is not None:
        bounds = pc.min_max(column)
        low, high = bounds["min"], bounds["max"]
        if field.min is not None and low.as_py() < field.min:
            ledger.mark(_outside(column, field, field.min, "less"), k, "below_min")
        if field.max is not None and high.as_py() > field.max:
            ledger.mark(_outside(column, field, field.max, "greater"), k, "above_max")
    if field.enum is not None:
        allowed = pc.is_in(column, value_set=pa.array(field.enum, pa.string()))
        if allowed.true_count < present:
            ledger.mark(_mask(pc.and_(column.is_valid(), pc.invert(allowed))), k, "not_in_enum")
    if field.regex is not None:
        matched = matches(column, field.regex)
        if matched.true_count < present:
            ledger.mark(_mask(pc.invert(matched)), k, "regex_mismatch")
    if field.max_length is not None:
        lengths = pc.utf8_length(column)
        if pc.max(lengths).as_py() > field.max_length:
            longest = pa.scalar(field.max_length, pa.int32())
            ledger.mark(_mask(pc.greater(lengths, longest)), k, "too_long")
    if field.type == "timestamp":
        _check_time_range(column, k, ledger, limits.min_ts_ms, now_ms + limits.max_future_ms)
    return column


def _check_time_range(column: pa.Array, k: int, ledger: Ledger, earliest: int, latest: int) -> None:
    bounds = pc.min_max(column)  # timestamp scalars: ``value`` is the integer ms
    if bounds["min"].value < earliest or bounds["max"].value > latest:
        ms = column.cast(pa.int64())
        early = pc.less(ms, pa.scalar(earliest, pa.int64()))
        late = pc.greater(ms, pa.scalar(latest, pa.int64()))
        ledger.mark(_mask(pc.or_(early, late)), k, "timestamp_out_of_range")


def _outside(column: pa.Array, field: Field, bound: float, op: str) -> Mask:
    """Values beyond a bound; int columns compare with an exact integer bound.

    Comparing int64 with a float scalar would cast the column to double, which
    Arrow refuses above 2**53 and which would round if it did not.
    """
    if field.type == "int":
        # For integers, x < 1.5 is x < 2 and x > 1.5 is x > 1.
        whole = math.ceil(bound) if op == "less" else math.floor(bound)
        if not INT64_MIN <= whole <= INT64_MAX:
            beyond = (whole > INT64_MAX) == (op == "less")
            return _mask(column.is_valid()) if beyond else np.zeros(len(column), dtype=bool)
        return _mask(getattr(pc, op)(column, pa.scalar(whole, pa.int64())))
    return _mask(getattr(pc, op)(column, pa.scalar(float(bound), pa.float64())))


def matches(column: pa.Array, pattern: str) -> pa.Array:
    try:
        return pc.match_substring_regex(column, pattern)
    except pa.ArrowInvalid:  # not RE2 syntax: Python's engine, value by value
        compiled = re.compile(pattern)
        return pa.array(
            [None if v is None else compiled.search(v) is not None for v in column.to_pylist()],
            type=pa.bool_(),
        )


def check_rules(
    table: pa.Table, schema: StreamSchema, ledger: Ledger, now_ms: int, timeout_s: float
) -> None:
    """Mark the rows that break a rule; all rules of one body share ``timeout_s`` (400 past it)."""
    deadline = time.monotonic() + timeout_s
    for rule in rules.compile_rules(schema):
        open_rows = np.flatnonzero(ledger.ok())
        if open_rows.size == 0:
            return
        subset = table if open_rows.size == table.num_rows else table.take(pa.array(open_rows))
        false, errors = rules.failing(rule, subset, now_ms, deadline)
        for pos, message in errors.items():
            ledger.mark_one(int(open_rows[pos]), RULES, rule.rule.code, message)
        hit = np.zeros(len(ledger.code), dtype=bool)
        hit[open_rows[false]] = True
        ledger.mark(hit, RULES, rule.rule.code)
        for pos in open_rows[false].tolist():
            ledger.notes.setdefault(pos, rule.message)


def _mask(result: pa.Array | pa.ChunkedArray) -> Mask:
    return np.asarray(result.fill_null(FALSE).to_numpy(zero_copy_only=False), dtype=bool)


def _failures(
    ledger: Ledger,
    table: pa.Table,
    schema: StreamSchema,
    rows: RowIndex,
    limits: DecodeLimits,
    now_ms: int,
) -> list[Problem]:
    out = []
    for pos in np.flatnonzero(~ledger.ok()).tolist():
        code = ledger.codes[ledger.code[pos]]
        k = int(ledger.field[pos])
        field = None if k == RULES else schema.fields[k]
        message = ledger.notes.get(pos)
        if message is None and field is not None:
            cell = table.column(k)[pos]
            value = cell.cast(pa.int64()).as_py() if field.type == "timestamp" else cell.as_py()
            message = failure_message(code, field, value, limits, now_ms)
        out.append(Problem(int(rows[pos]), code, message or code, field.name if field else None))
    return out


def failure_message(code: str, field: Field, value: Any, limits: DecodeLimits, now_ms: int) -> str:
    """The message of a failed check; ``value`` is the cell's value (timestamps in ms)."""
    name = field.name
    if code == "required":
        return f"{name} is required; send a value for it"
    if code == "missing_event_time":
        return f"{name} is the event time and is missing; send it (ISO-8601 with an offset)"
    if code == "timestamp_out_of_range":
        ms = value
        if ms < limits.min_ts_ms:
            return f"{name} {_when(ms)} is before {_when(limits.min_ts_ms)}; check the value and its unit"
        return (
            f"{name} {_when(ms)} is more than {limits.max_future_ms // 1000} s after the receive "
            f"time {_when(now_ms)}; check the clock and the time unit of the sender"
        )
    if code == "below_min":
        return f"{name} is {value}, below the minimum {_number(field.min)}"
    if code == "above_max":
        return f"{name} is {value}, above the maximum {_number(field.max)}"
    if code == "not_in_enum":
        allowed = ", ".join(map(repr, (field.enum or [])[:10]))
        return f"{name} is {value!r}; allowed values are {allowed}"
    if code == "regex_mismatch":
        return f"{name} {str(value)[:80]!r} does not match the pattern {field.regex}"
    if code == "too_long":
        return f"{name} has {len(value)} characters; at most {field.max_length} are allowed"
    return code


def _number(bound: float | None) -> str:
    return str(int(bound)) if bound is not None and float(bound).is_integer() else str(bound)


def _when(ms: int) -> str:
    try:
        return ms_to_datetime(ms).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms since the epoch"
