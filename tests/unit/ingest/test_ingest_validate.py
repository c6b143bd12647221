"""Constraints and cross-field rules: each invalid row reported once, with its first failure."""

from __future__ import annotations

import json
from typing import Any

import duckdb
import pytest

from headwater.errors import InvalidSchema
from headwater.ingest.batch import DecodeLimits, ValidatedBatch, decode_and_validate
from headwater.ingest.rules import compile_rules
from headwater.model.schema import StreamSchema, schema_from_dict
from headwater.model.time import parse_iso_ms

FIELDS: list[dict[str, Any]] = [
    {
        "name": "device_id",
        "type": "string",
        "required": True,
        "regex": "^dev-[0-9]+$",
        "max_length": 8,
    },
    {"name": "ts", "type": "timestamp"},
    {"name": "temperature", "type": "float", "min": -50, "max": 150},
    {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
    {"name": "count", "type": "int", "min": 0, "max": 10},
    {"name": "processed_at", "type": "timestamp", "unit": "ms"},
]
SCHEMA = schema_from_dict(
    {
        "name": "readings",
        "fields": FIELDS,
        "event_time": "ts",
        "rules": [
            {
                "expr": "processed_at >= ts",
                "code": "processed_before_event",
                "message": "processed_at must not be before ts",
            },
            {"expr": "status <> 'error' OR temperature > 100"},
        ],
    }
)
NOW = parse_iso_ms("2026-11-21T12:00:00Z")
LIMITS = DecodeLimits(
    max_body_bytes=1 << 20,
    max_rows=1000,
    max_depth=8,
    min_ts_ms=parse_iso_ms("2000-01-01T00:00:00Z"),
    max_future_ms=3_600_000,
    max_errors=100,
)
GOOD = {
    "device_id": "dev-1",
    "ts": "2026-11-21T11:00:00Z",
    "temperature": 20.5,
    "status": "ok",
    "count": 1,
}


def decode(rows: list[dict[str, Any]], schema: StreamSchema = SCHEMA) -> ValidatedBatch:
    body = "\n".join(json.dumps(r) for r in rows).encode()
    return decode_and_validate(body, "application/x-ndjson", None, schema, LIMITS, NOW)


def first_error(change: dict[str, Any], drop: tuple[str, ...] = ()) -> tuple[str | None, str, str]:
    row = {k: v for k, v in (GOOD | change).items() if k not in drop}
    batch = decode([GOOD, row, GOOD])
    assert [e.row for e in batch.errors] == [1]
    assert batch.valid_rows.to_pylist() == [0, 2]
    err = batch.errors[0]
    return err.field, err.code, err.message


@pytest.mark.parametrize(
    ("change", "drop", "field", "code", "says"),
    [
        ({}, ("device_id",), "device_id", "required", "required"),
        ({"device_id": None}, (), "device_id", "required", "send a value"),
        ({"device_id": "pump-1"}, (), "device_id", "regex_mismatch", "^dev-[0-9]+$"),
        ({"device_id": "dev-12345"}, (), "device_id", "too_long", "at most 8"),
        ({"temperature": -50.5}, (), "temperature", "below_min", "minimum -50"),
        ({"temperature": 150.01}, (), "temperature", "above_max", "maximum 150"),
        ({"status": "bad"}, (), "status", "not_in_enum", "'ok', 'warn', 'error'"),
        ({"count": -1}, (), "count", "below_min", "minimum 0"),
        ({"count": 11}, (), "count", "above_max", "maximum 10"),
        ({"ts": "1999-12-31T23:59:59Z"}, (), "ts", "timestamp_out_of_range", "before 2000-01-01"),
        (
            {"ts": "2026-11-21T13:00:00.001Z"},
            (),
            "ts",
            "timestamp_out_of_range",
            "after the receive time",
        ),
        ({}, ("ts",), "ts", "missing_event_time", "event time"),
        ({"processed_at": 1}, (), "processed_at", "timestamp_out_of_range", "before"),
    ],
)
def test_each_constraint_has_its_code_and_a_helpful_message(
    change: dict[str, Any], drop: tuple[str, ...], field: str, code: str, says: str
) -> None:
    got_field, got_code, message = first_error(change, drop)
    assert (got_field, got_code) == (field, code)
    assert says in message


def test_bounds_are_inclusive() -> None:
    edge = GOOD | {
        "temperature": 150,
        "count": 10,
        "ts": "2026-11-21T13:00:00Z",
        "device_id": "dev-1234",
    }
    assert decode([edge, GOOD | {"temperature": -50, "count": 0}]).errors == []


def test_nulls_pass_constraints_unless_required() -> None:
    row = {"device_id": "dev-1", "ts": "2026-11-21T11:00:00Z", "temperature": None, "status": None}
    assert decode([row]).errors == []


def test_the_first_failing_field_in_schema_order_wins() -> None:
    row = GOOD | {"device_id": "x" * 20, "temperature": 999, "status": "nope", "count": "many"}
    field, code, _ = first_error(row)
    assert (field, code) == ("device_id", "regex_mismatch")
    field, code, _ = first_error(GOOD | {"temperature": "hot", "status": "nope"})
    assert (field, code) == ("temperature", "wrong_type")
    field, code, _ = first_error(GOOD | {"temperature": 999, "count": "many"})
    assert (field, code) == ("temperature", "above_max")


def test_rules_use_their_code_and_message_and_null_passes() -> None:
    late = GOOD | {
        "ts": "2026-11-21T11:00:00Z",
        "processed_at": parse_iso_ms("2026-11-21T10:59:59Z"),
    }
    assert first_error(late) == (
        None,
        "processed_before_event",
        "processed_at must not be before ts",
    )
    field, code, message = first_error(GOOD | {"status": "error", "temperature": 20})
    assert (field, code) == (None, "rule_violated")
    assert "status <> 'error' OR temperature > 100" in message
    assert decode([GOOD | {"processed_at": None}]).errors == []


def test_field_errors_come_before_rule_errors() -> None:
    row = GOOD | {"status": "error", "temperature": 20, "count": 99}
    assert first_error(row)[:2] == ("count", "above_max")


def test_missing_event_time_is_filled_with_now_when_allowed() -> None:
    schema = schema_from_dict(
        {"name": "r", "fields": FIELDS, "event_time": "ts", "allow_missing_event_time": True}
    )
    batch = decode([{"device_id": "dev-1"}, GOOD], schema)
    assert batch.errors == []
    assert batch.valid.column("ts").cast("int64").to_pylist() == [NOW, parse_iso_ms(GOOD["ts"])]


@pytest.mark.parametrize(
    ("expr", "bad", "in_arrow"),
    [
        ("upper(status) <> 'ERROR'", {"status": "error"}, False),
        ("processed_at >= ts", {"processed_at": parse_iso_ms("2026-11-21T10:00:00Z")}, True),
        ("count * 2 <= 20 AND status IN ('ok', 'warn')", {"status": "error"}, True),
        ("ts <= now()", {"ts": "2026-11-21T12:30:00Z"}, False),  # now() is the ingest clock
        ("count BETWEEN 0 AND 5 OR count IS NULL", {"count": 7}, True),
        ("NOT (temperature > 100)", {"temperature": 101}, True),
    ],
)
def test_rules_on_both_evaluators(expr: str, bad: dict[str, Any], in_arrow: bool) -> None:
    schema = schema_from_dict({"name": "r", "fields": FIELDS, "rules": [{"expr": expr}]})
    assert (compile_rules(schema)[0].arrow is not None) is in_arrow
    good = GOOD | {"processed_at": parse_iso_ms("2026-11-21T11:30:00Z")}
    batch = decode([good, good | bad, good | {"count": None}], schema)
    assert [(e.row, e.code) for e in batch.errors] == [(1, "rule_violated")]


def test_a_rule_that_cannot_be_evaluated_on_a_row_rejects_only_that_row() -> None:
    schema = schema_from_dict(
        {
            "name": "r",
            "fields": [{"name": "s", "type": "string"}],
            "rules": [{"expr": "CAST(s AS INTEGER) > 0"}],
        }
    )
    body = b'{"s": "5"}\n{"s": "five"}\n{"s": "-1"}\n{"s": null}\n'
    batch = decode_and_validate(body, "application/x-ndjson", None, schema, LIMITS, NOW)
    assert [(e.row, e.code) for e in batch.errors] == [(1, "rule_violated"), (2, "rule_violated")]
    assert "could not be evaluated" in batch.errors[0].message


@pytest.mark.parametrize(
    "expr",
    [
        "(SELECT count(*) FROM read_csv('/etc/passwd')) > 0",
        "missing_field > 1",
        "a >= b) OR (1 = 1",
        "length(getenv('HOME')) > 0",
    ],
)
def test_rules_that_are_not_row_expressions_are_invalid(expr: str) -> None:
    schema = schema_from_dict(
        {
            "name": "r",
            "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int"}],
            "rules": [{"expr": expr}],
        }
    )
    with pytest.raises(InvalidSchema):
        compile_rules(schema)


def test_the_rule_engine_cannot_touch_files() -> None:
    from headwater.ingest.rules import _connection

    with pytest.raises(duckdb.Error, match="disabled"):
        _connection().execute("SELECT * FROM read_text('/etc/passwd')").fetchall()
    with pytest.raises(duckdb.Error):
        _connection().execute("SET enable_external_access = true")


def test_regex_is_re2_search_with_a_python_fallback() -> None:
    fields = [{"name": "s", "type": "string", "regex": r"(a)\1"}]  # a backreference: not RE2
    schema = schema_from_dict({"name": "r", "fields": fields})
    body = b'{"s": "xaax"}\n{"s": "ab"}\n'
    batch = decode_and_validate(body, "application/x-ndjson", None, schema, LIMITS, NOW)
    assert [(e.row, e.code) for e in batch.errors] == [(1, "regex_mismatch")]


def test_max_length_counts_characters_not_bytes() -> None:
    assert decode([GOOD | {"device_id": "dev-1"}]).errors == []
    schema = schema_from_dict(
        {"name": "r", "fields": [{"name": "s", "type": "string", "max_length": 3}]}
    )
    body = '{"s": "äöü"}\n{"s": "äöüß"}\n'.encode()
    batch = decode_and_validate(body, "application/x-ndjson", None, schema, LIMITS, NOW)
    assert [(e.row, e.code) for e in batch.errors] == [(1, "too_long")]
