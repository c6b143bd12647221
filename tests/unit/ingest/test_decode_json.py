"""NDJSON and JSON bodies: row-level errors keep the other rows, values convert exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from headwater.errors import HeadwaterError
from headwater.ingest.batch import DecodeLimits, ValidatedBatch, decode_and_validate
from headwater.model.schema import StreamSchema, schema_from_dict
from headwater.model.time import parse_iso_ms

SCHEMA = schema_from_dict(
    {
        "name": "readings",
        "fields": [
            {"name": "device_id", "type": "string"},
            {"name": "ts", "type": "timestamp"},
            {"name": "temperature", "type": "float"},
            {"name": "count", "type": "int"},
            {"name": "active", "type": "bool"},
            {"name": "meta", "type": "json"},
            {"name": "sec", "type": "timestamp", "unit": "s"},
            {"name": "milli", "type": "timestamp", "unit": "ms"},
            {"name": "micro", "type": "timestamp", "unit": "us"},
        ],
    }
)
NOW = parse_iso_ms("2026-11-21T12:00:00Z")
LIMITS = DecodeLimits(
    max_body_bytes=4 << 20,
    max_rows=1000,
    max_depth=5,
    min_ts_ms=0,
    max_future_ms=86_400_000,
    max_errors=100,
)


def ndjson(*lines: str | dict[str, object]) -> bytes:
    return b"\n".join(
        (line if isinstance(line, str) else json.dumps(line)).encode() for line in lines
    )


def decode(
    body: bytes, content_type: str = "application/x-ndjson", schema: StreamSchema = SCHEMA
) -> ValidatedBatch:
    return decode_and_validate(body, content_type, None, schema, LIMITS, NOW)


def codes(batch: ValidatedBatch) -> list[tuple[int, str | None, str]]:
    return [(e.row, e.field, e.code) for e in batch.errors]


def one(value: object, field: str) -> ValidatedBatch:
    """Decode one row through the fast path and the slow path (a bad neighbour)."""
    fast = decode(ndjson({field: value}))
    slow = decode(ndjson({field: value}, "not json"))
    assert codes(fast) == codes(slow)[: len(codes(fast))]
    assert fast.valid.equals(slow.valid)
    return fast


def test_valid_rows_convert_to_the_arrow_schema() -> None:
    batch = decode(
        ndjson(
            {
                "device_id": "d1",
                "ts": "2026-11-21T10:00:00.123Z",
                "temperature": 21,
                "count": 3,
                "active": True,
                "meta": {"b": [1, 2], "a": None},
                "sec": 1_700_000_000.123,
                "milli": 1_700_000_000_123,
                "micro": 1_700_000_000_123_456,
                "unknown": {"nested": ["ignored"]},
            }
        )
    )
    row = batch.valid.to_pylist()[0]
    assert row["device_id"] == "d1"
    assert row["ts"] == datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC)
    assert row["temperature"] == 21.0 and isinstance(row["temperature"], float)
    assert (row["count"], row["active"]) == (3, True)
    assert row["meta"] == '{"b":[1,2],"a":null}'
    ms = [batch.valid.column(c).cast("int64")[0].as_py() for c in ("sec", "milli", "micro")]
    assert ms == [1_700_000_000_123] * 3
    assert batch.valid.schema.names == SCHEMA.field_names
    assert batch.valid_rows.to_pylist() == [0] and batch.errors == []


def test_blank_lines_are_skipped_and_not_counted() -> None:
    body = b'\n{"count": 1}\n\n   \n\r\n{"count": 2}\r\n\t\n{"count": 3}'
    batch = decode(body)
    assert batch.total_rows == 3
    assert batch.valid_rows.to_pylist() == [0, 1, 2]
    assert batch.valid.column("count").to_pylist() == [1, 2, 3]


def test_bad_lines_are_row_errors_with_request_row_indexes() -> None:
    body = ndjson(
        {"count": 1},
        "",
        '{"count": 2',
        "[1, 2]",
        '"text"',
        {"count": 3},
        '{"count": 4} {"count": 5}',
        "{'count': 6}",
        {"count": 7},
    )
    batch = decode(body)
    assert codes(batch) == [
        (1, None, "malformed_json"),
        (2, None, "not_an_object"),
        (3, None, "not_an_object"),
        (5, None, "malformed_json"),
        (6, None, "malformed_json"),
    ]
    assert batch.valid_rows.to_pylist() == [0, 4, 7]
    assert batch.valid.column("count").to_pylist() == [1, 3, 7]
    assert [e.raw for e in batch.errors][:2] == ['{"count": 2', "[1, 2]"]
    assert "not valid JSON" in batch.errors[0].message


@pytest.mark.parametrize(
    ("value", "expected"),
    [(5, 5), (-0.0, 0), (3.0, 3), (2**63 - 1, 2**63 - 1), (-(2**63), -(2**63))],
)
def test_int_fields_take_integral_numbers(value: object, expected: int) -> None:
    assert one(value, "count").valid.column("count").to_pylist() == [expected]


@pytest.mark.parametrize("value", [1.5, True, "5", 2**63, -(2**63) - 1, 10**30, [1], {"a": 1}])
def test_int_fields_refuse_everything_else(value: object) -> None:
    batch = one(value, "count")
    assert codes(batch)[0] == (0, "count", "wrong_type")
    assert "integer" in batch.errors[0].message or "64-bit" in batch.errors[0].message


@pytest.mark.parametrize(
    ("value", "expected"), [(5, 5.0), (2.5, 2.5), (10**20, 1e20), (-1e-300, -1e-300)]
)
def test_float_fields_take_ints_and_floats(value: object, expected: float) -> None:
    assert one(value, "temperature").valid.column("temperature").to_pylist() == [expected]


@pytest.mark.parametrize("value", [True, "1.5", None, [1.0]])
def test_float_fields_refuse_non_numbers(value: object) -> None:
    batch = one(value, "temperature")
    if value is None:
        assert batch.valid.num_rows == 1
    else:
        assert codes(batch)[0] == (0, "temperature", "wrong_type")


@pytest.mark.parametrize(
    ("field", "value"), [("active", 1), ("active", "true"), ("device_id", 5), ("device_id", True)]
)
def test_bool_and_string_fields_are_strict(field: str, value: object) -> None:
    assert codes(one(value, field))[0] == (0, field, "wrong_type")


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-11-21T10:00:00.123Z", "2026-11-21T10:00:00.123000+00:00"),
        ("2026-11-21T12:00:00+02:00", "2026-11-21T10:00:00+00:00"),
        ("2026-11-21T10:00:00.123456Z", "2026-11-21T10:00:00.123000+00:00"),
        ("2026-11-21T10:00:00.123999999Z", "2026-11-21T10:00:00.123000+00:00"),
        ("2026-11-21 10:00:00-0130", "2026-11-21T11:30:00+00:00"),
    ],
)
def test_iso_timestamps_with_an_offset_become_utc_milliseconds(text: str, iso: str) -> None:
    batch = one(text, "ts")
    assert batch.valid.column("ts")[0].as_py().isoformat() == iso


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2026-11-21T10:00:00", "timestamp_no_zone"),
        ("2026-11-21", "timestamp_no_zone"),
        ("yesterday", "invalid_timestamp"),
        ("2026-13-01T00:00:00Z", "invalid_timestamp"),
        (1_700_000_000, "wrong_type"),
    ],
)
def test_bad_iso_timestamps(value: object, code: str) -> None:
    batch = one(value, "ts")
    assert codes(batch)[0] == (0, "ts", code)
    # Each message says how to fix the value: add an offset, or what a valid one looks like.
    assert "'Z'" in batch.errors[0].message or "e.g." in batch.errors[0].message


@pytest.mark.parametrize(
    ("field", "value", "ms"),
    [
        ("sec", 1_700_000_000, 1_700_000_000_000),
        ("sec", 1_700_000_000.5, 1_700_000_000_500),
        ("sec", 1_700_000_000.0015, 1_700_000_000_001),
        ("milli", 1_700_000_000_123.9, 1_700_000_000_123),
        ("micro", 1_700_000_000_123_999, 1_700_000_000_123),
    ],
)
def test_epoch_numbers_become_milliseconds(field: str, value: float, ms: int) -> None:
    assert one(value, field).valid.column(field).cast("int64").to_pylist() == [ms]


@pytest.mark.parametrize(
    ("field", "value"), [("sec", "1700000000"), ("milli", True), ("micro", [1])]
)
def test_epoch_fields_refuse_non_numbers(field: str, value: object) -> None:
    assert codes(one(value, field))[0] == (0, field, "wrong_type")


def test_epoch_seconds_beyond_int64_milliseconds_are_out_of_range() -> None:
    assert codes(one(1e300, "sec"))[0] == (0, "sec", "timestamp_out_of_range")


def test_json_fields_keep_any_value_as_compact_text() -> None:
    values = [{"a": 1}, [1, "x"], "text", 3.5, True]
    batch = decode(ndjson(*({"meta": v} for v in values), {"meta": None}))
    assert batch.valid.column("meta").to_pylist() == [
        '{"a":1}',
        '[1,"x"]',
        '"text"',
        "3.5",
        "true",
        None,
    ]


def test_too_deep_rows_are_rejected_but_brackets_in_strings_do_not_count() -> None:
    deep = {"meta": [[[[[1]]]]]}  # depth 6 with the row itself
    shallow_text = {"device_id": "[[[[[[[[[[{{{{{{{", "meta": [[['\\"[[[[[[']]]}
    batch = decode(ndjson(deep, shallow_text, {"meta": [[[1]]]}))
    assert codes(batch) == [(0, None, "too_deep")]
    assert batch.valid_rows.to_pylist() == [1, 2]
    assert "5 levels" in batch.errors[0].message


def test_a_line_nested_a_million_deep_is_only_too_deep() -> None:
    body = (
        b'{"count": 1}\n{"meta": ' + b"[" * 1_000_000 + b"]" * 1_000_000 + b"}\n" + b"[" * 100_000
    )
    batch = decode(body)
    assert codes(batch) == [(1, None, "too_deep"), (2, None, "too_deep")]
    assert batch.valid.column("count").to_pylist() == [1]


def test_json_array_elements_fail_alone() -> None:
    body = b'[{"count": 1}, {"count": "2"}, 7, {"count": }, {"meta": [[[[[[1]]]]]]}, {"count": 5}]'
    batch = decode(body, "application/json")
    assert codes(batch) == [
        (1, "count", "wrong_type"),
        (2, None, "not_an_object"),
        (3, None, "malformed_json"),
        (4, None, "too_deep"),
    ]
    assert batch.valid.column("count").to_pylist() == [1, 5]
    assert [e.raw for e in batch.errors][:3] == ['{"count": "2"}', "7", '{"count": }']


def test_single_json_object_is_one_row() -> None:
    batch = decode(b'{"count": 4, "device_id": "x"}', "application/json")
    assert batch.valid.column("count").to_pylist() == [4] and batch.total_rows == 1
    batch = decode(b'{"count": "4"}', "application/json")
    assert codes(batch) == [(0, "count", "wrong_type")] and batch.errors[0].raw == '{"count": "4"}'


def test_empty_json_array_is_an_empty_batch() -> None:
    batch = decode(b" [ ] ", "application/json")
    assert batch.total_rows == 0 and batch.valid.num_rows == 0 and batch.errors == []


@pytest.mark.parametrize(
    "body",
    [b"[{}", b"{", b'{"a": 1} x', b"5", b'"text"', b"null", b'[{"a": 1}]]', b"[1, 2"],
)
def test_json_bodies_that_are_not_json_are_refused_whole(body: bytes) -> None:
    with pytest.raises(HeadwaterError) as caught:
        decode(body, "application/json")
    assert caught.value.code == "malformed_json" and caught.value.status == 400


def test_field_names_that_are_python_keywords_work() -> None:
    schema = schema_from_dict(
        {
            "name": "k",
            "fields": [{"name": "class", "type": "int"}, {"name": "from", "type": "string"}],
        }
    )
    batch = decode(b'{"class": 1, "from": "x"}\n', schema=schema)
    assert batch.valid.to_pylist() == [{"class": 1, "from": "x"}]


def test_duplicate_keys_keep_the_last_value_on_both_paths() -> None:
    assert one(None, "count").valid.num_rows == 1
    batch = decode(b'{"count": 1, "count": 2}\n{"count": 3}')
    assert batch.valid.column("count").to_pylist() == [2, 3]


def test_lone_surrogate_escape_is_malformed() -> None:
    assert codes(decode(b'{"device_id": "\\ud800"}\n{"count": 1}')) == [(0, None, "malformed_json")]


def test_json_array_element_nested_beyond_the_parser_limit_is_only_too_deep() -> None:
    deep = b'{"unknown": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    batch = decode(b'[{"count": 1}, ' + deep + b', {"count": 2}]', "application/json")
    assert codes(batch) == [(1, None, "too_deep")]
    assert batch.valid.column("count").to_pylist() == [1, 2]


def test_flat_json_arrays_skip_the_exact_depth_scan_but_deep_ones_do_not() -> None:
    rows = [{"meta": {"a": {"b": [1]}}}] * 50  # many braces in total, each row shallow
    batch = decode(json.dumps(rows).encode(), "application/json")
    assert batch.errors == [] and batch.total_rows == 50
    rows.append({"meta": [[[[[1]]]]]})
    assert codes(decode(json.dumps(rows).encode(), "application/json")) == [(50, None, "too_deep")]
