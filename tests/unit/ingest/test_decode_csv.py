"""CSV bodies: header, quoting, typed cells, bad rows kept apart."""

from __future__ import annotations

import pytest

from headwater.errors import HeadwaterError
from headwater.ingest.batch import DecodeLimits, ValidatedBatch, decode_and_validate
from headwater.model.schema import schema_from_dict
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
            {"name": "milli", "type": "timestamp", "unit": "ms"},
        ],
    }
)
LIMITS = DecodeLimits(
    max_body_bytes=1 << 20,
    max_rows=100,
    max_depth=4,
    min_ts_ms=0,
    max_future_ms=10**12,
    max_errors=9,
)
NOW = parse_iso_ms("2026-11-22T00:00:00Z")


def decode(text: str) -> ValidatedBatch:
    return decode_and_validate(text.encode(), "text/csv", None, SCHEMA, LIMITS, NOW)


def codes(batch: ValidatedBatch) -> list[tuple[int, str | None, str]]:
    return [(e.row, e.field, e.code) for e in batch.errors]


def test_cells_are_parsed_by_field_type() -> None:
    batch = decode(
        "device_id,ts,temperature,count,active,meta,milli\n"
        'd1,2026-11-21T10:00:00.5Z,21.5,3,true,"{""a"": [1, 2]}",1700000000123\n'
        "d2,2026-11-21T12:00:00+02:00,-4,-7,false,null,1700000000123.9\n"
    )
    assert batch.errors == []
    rows = batch.valid.to_pylist()
    assert [r["device_id"] for r in rows] == ["d1", "d2"]
    assert [r["temperature"] for r in rows] == [21.5, -4.0]
    assert [r["count"] for r in rows] == [3, -7]
    assert [r["active"] for r in rows] == [True, False]
    assert [r["meta"] for r in rows] == ['{"a":[1,2]}', "null"]
    assert batch.valid.column("milli").cast("int64").to_pylist() == [1700000000123] * 2
    assert [r["ts"].isoformat() for r in rows] == [
        "2026-11-21T10:00:00.500000+00:00",
        "2026-11-21T10:00:00+00:00",
    ]


def test_empty_cells_are_null_and_missing_columns_are_null() -> None:
    batch = decode('device_id,count\n,\n"",5\n')
    assert batch.valid.to_pydict()["device_id"] == [None, None]
    assert batch.valid.to_pydict()["count"] == [None, 5]
    assert batch.valid.to_pydict()["temperature"] == [None, None]


def test_quoted_cells_hold_commas_quotes_and_newlines() -> None:
    text = 'device_id,count\n"a,b",1\n"say ""hi""",2\n"two\nlines",3\n'
    batch = decode(text)
    assert batch.valid.column("device_id").to_pylist() == ["a,b", 'say "hi"', "two\nlines"]
    assert batch.valid_rows.to_pylist() == [0, 1, 2]


def test_unknown_columns_are_ignored_and_header_whitespace_is_tolerated() -> None:
    batch = decode("extra, count ,other\nx,4,y\n")
    assert batch.valid.column("count").to_pylist() == [4]


def test_bad_cells_are_row_errors_and_the_raw_line_is_kept() -> None:
    text = (
        "device_id,count,temperature,active,ts,meta\n"
        "ok,1,1.5,true,2026-01-01T00:00:00Z,[1]\n"
        "a,1.5,,,,\n"
        "b,3.0,x,,,\n"
        "c,,nan,,,\n"
        "d,,,yes,,\n"
        '"e\nf",,,,2026-01-01T00:00:00,\n'
        "g,,,,,not json\n"
        "h,,,,,[[[[1]]]]\n"
        "i,99999999999999999999,,,,\n"
    )
    batch = decode(text)
    assert codes(batch) == [
        (1, "count", "wrong_type"),
        (2, "temperature", "wrong_type"),
        (3, "temperature", "wrong_type"),
        (4, "active", "wrong_type"),
        (5, "ts", "timestamp_no_zone"),
        (6, "meta", "wrong_type"),
        (7, "meta", "too_deep"),
        (8, "count", "wrong_type"),
    ]
    assert batch.valid_rows.to_pylist() == [0]
    assert batch.errors[0].raw == "a,1.5,,,,"
    assert batch.errors[4].raw == '"e\nf",,,,2026-01-01T00:00:00,'
    assert "'1.5'" in batch.errors[0].message


def test_integral_decimal_text_is_an_int() -> None:
    assert decode("count\n3.0\n-0\n").valid.column("count").to_pylist() == [3, 0]


def test_rows_with_the_wrong_number_of_cells_are_row_errors() -> None:
    batch = decode("device_id,count\na,1\nb\nc,3,extra\n\nd,4\n")
    assert codes(batch) == [(1, None, "malformed_csv"), (2, None, "malformed_csv")]
    assert batch.valid_rows.to_pylist() == [0, 3]
    assert batch.total_rows == 4
    assert [e.raw for e in batch.errors] == ["b", "c,3,extra"]
    assert "2" in batch.errors[0].message and "1" in batch.errors[0].message


def test_crlf_line_endings() -> None:
    batch = decode("device_id,count\r\na,1\r\nb,x\r\n")
    assert batch.valid.column("count").to_pylist() == [1]
    assert codes(batch) == [(1, "count", "wrong_type")]
    assert batch.errors[0].raw == "b,x"


def test_header_only_is_an_empty_batch() -> None:
    batch = decode("device_id,count\n")
    assert batch.total_rows == 0 and batch.valid.num_rows == 0


@pytest.mark.parametrize(
    "text",
    ["1,2,3\n4,5,6\n", "name,other\nx,y\n", "count,count\n1,2\n"],
)
def test_headers_that_name_no_field_or_a_field_twice_are_refused(text: str) -> None:
    with pytest.raises(HeadwaterError) as caught:
        decode(text)
    assert caught.value.code == "malformed_csv" and caught.value.status == 400
    assert "header" in caught.value.message
