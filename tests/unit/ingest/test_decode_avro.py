"""Avro object container files: unions, nulls, logical types, and hostile containers."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from headwater.errors import HeadwaterError, PayloadTooLarge
from headwater.ingest.batch import DecodeLimits, ValidatedBatch, decode_and_validate
from headwater.model.schema import schema_from_dict

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
    max_future_ms=10**13,
    max_errors=9,
)
AVRO_SCHEMA = {
    "type": "record",
    "name": "Reading",
    "namespace": "example",
    "fields": [
        {"name": "device_id", "type": ["null", "string", "long"]},
        {"name": "ts", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}]},
        {"name": "temperature", "type": ["null", "float", "double"]},
        {"name": "count", "type": ["null", "int", "long"]},
        {"name": "active", "type": ["null", "boolean"]},
        {"name": "meta", "type": ["null", {"type": "map", "values": ["long", "string"]}]},
        {"name": "milli", "type": ["null", {"type": "long", "logicalType": "timestamp-micros"}]},
        {"name": "extra", "type": "string", "default": ""},
    ],
}


def container(records: list[Any], schema: Any = AVRO_SCHEMA, codec: str = "null") -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records, codec=codec)
    return out.getvalue()


def decode(body: bytes, limits: DecodeLimits = LIMITS) -> ValidatedBatch:
    return decode_and_validate(body, "avro/binary", None, SCHEMA, limits, now_ms=2_000_000_000_000)


def refused(body: bytes, limits: DecodeLimits = LIMITS) -> HeadwaterError:
    with pytest.raises(HeadwaterError) as caught:
        decode(body, limits)
    return caught.value


def zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def with_block(schema: Any, count: int, payload: bytes) -> bytes:
    """A container whose single block is hand-made: it may lie about anything."""
    header = container([], schema)
    sync = header[-16:]
    return header + zigzag(count) + zigzag(len(payload)) + payload + sync


READING = {
    "device_id": "d1",
    "ts": datetime(2026, 11, 21, 10, 0, 0, 123000, tzinfo=UTC),
    "temperature": 21.5,
    "count": 3,
    "active": True,
    "meta": {"fw": "1.2", "boot": 7},
    "milli": 1_700_000_000_123_456,
    "extra": "ignored",
}


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_records_with_unions_and_nulls(codec: str) -> None:
    nulls = dict.fromkeys(READING) | {"extra": ""}
    batch = decode(container([READING, nulls], codec=codec))
    assert batch.errors == []
    first, second = batch.valid.to_pylist()
    assert first["device_id"] == "d1" and first["count"] == 3 and first["active"] is True
    assert first["ts"] == READING["ts"]
    assert batch.valid.column("milli").cast("int64").to_pylist()[0] == 1_700_000_000_123
    assert json.loads(first["meta"]) == {"fw": "1.2", "boot": 7}
    assert set(second.values()) == {None}


@pytest.mark.parametrize(
    "content_type", ["avro/binary", "application/avro", "application/vnd.apache.avro+binary"]
)
def test_avro_media_types(content_type: str) -> None:
    body = container([READING])
    batch = decode_and_validate(body, content_type, None, SCHEMA, LIMITS, now_ms=2_000_000_000_000)
    assert batch.valid.num_rows == 1


def test_union_branches_of_the_wrong_type_are_row_errors() -> None:
    batch = decode(container([READING, READING | {"device_id": 42}, READING | {"count": 2**62}]))
    assert [(e.row, e.field, e.code) for e in batch.errors] == [(1, "device_id", "wrong_type")]
    assert batch.valid_rows.to_pylist() == [0, 2]
    assert json.loads(batch.errors[0].raw)["device_id"] == 42


def test_local_timestamps_have_no_zone() -> None:
    schema = {
        "type": "record",
        "name": "L",
        "fields": [
            {"name": "ts", "type": {"type": "long", "logicalType": "local-timestamp-millis"}}
        ],
    }
    batch = decode(container([{"ts": 1_700_000_000_000}], schema))
    assert [(e.field, e.code) for e in batch.errors] == [("ts", "timestamp_no_zone")]


def test_non_record_data_is_not_an_object() -> None:
    batch = decode(container([1, 2], "long"))
    assert [(e.row, e.code) for e in batch.errors] == [(0, "not_an_object"), (1, "not_an_object")]


def test_too_deep_json_values_are_rejected() -> None:
    schema = {
        "type": "record",
        "name": "J",
        "fields": [
            {
                "name": "meta",
                "type": {
                    "type": "array",
                    "items": {
                        "type": "array",
                        "items": {"type": "array", "items": {"type": "array", "items": "long"}},
                    },
                },
            }
        ],
    }
    batch = decode(container([{"meta": [[[[1]]]]}, {"meta": [[[]]]}], schema))
    assert [(e.row, e.field, e.code) for e in batch.errors] == [(0, "meta", "too_deep")]


@pytest.mark.parametrize(
    "body",
    [
        b"Obj\x01",
        b"not avro at all",
        container([READING] * 3)[:-20],
        b"Obj\x02" + container([])[4:],
    ],
)
def test_damaged_containers_are_400(body: bytes) -> None:
    err = refused(body)
    assert err.code == "malformed_avro" and err.status == 400


def test_a_wrong_sync_marker_is_400() -> None:
    body = bytearray(container([READING]))
    body[-1] ^= 0xFF
    assert refused(bytes(body)).code == "malformed_avro"


def test_more_records_than_allowed_is_413() -> None:
    err = refused(container([READING] * 101))
    assert err.code == "too_many_rows" and err.status == 413


def test_unsupported_codec_is_refused() -> None:
    body = container([READING], codec="deflate").replace(b"deflate", b"brotlii", 1)
    assert refused(body).code == "malformed_avro"


def test_recursive_schemas_are_refused_before_reading_deep_data() -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
    depth = 300_000  # enough to overflow the C stack of a recursive reader
    body = with_block(node, 1, b"\x02" * depth + b"\x00")
    err = refused(body)
    assert err.code == "malformed_avro" and "recursive" in err.message


def test_arrays_of_zero_size_items_are_refused() -> None:
    schema = {
        "type": "record",
        "name": "A",
        "fields": [{"name": "xs", "type": {"type": "array", "items": "null"}}],
    }
    body = with_block(schema, 1, zigzag(2**60) + b"\x00")  # 2**60 nulls in two bytes
    assert "no bytes" in refused(body).message


def test_huge_declared_string_length_is_400_not_an_allocation() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "device_id", "type": "string"}]}
    body = with_block(schema, 1, zigzag(2**60) + b"abc")
    assert refused(body).code == "malformed_avro"


def test_huge_declared_record_count_stops_at_the_data() -> None:
    schema = {"type": "record", "name": "S", "fields": [{"name": "count", "type": "long"}]}
    payload = zigzag(7) * 3
    assert refused(with_block(schema, 10**12, payload)).code in ("malformed_avro", "too_many_rows")


def test_deflate_bomb_is_stopped_at_the_body_limit() -> None:
    schema = {"type": "record", "name": "B", "fields": [{"name": "device_id", "type": "string"}]}
    records = [{"device_id": "x" * 100_000}] * 30  # 3 MB that deflates to a few KB
    body = container(records, schema, codec="deflate")
    assert len(body) < 100_000
    assert isinstance(refused(body), PayloadTooLarge)


def test_raw_text_is_the_record_as_json() -> None:
    batch = decode(container([READING | {"count": None, "temperature": float("nan")}]))
    assert [(e.field, e.code) for e in batch.errors] == [("temperature", "wrong_type")]
    raw = json.loads(batch.errors[0].raw)
    assert raw["device_id"] == "d1" and raw["ts"].startswith("2026-11-21T10:00:00.123")
