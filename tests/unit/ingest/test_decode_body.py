"""Request-level handling: media types, content encodings, text checks, size caps."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import pytest

from headwater.errors import HeadwaterError, PayloadTooLarge, UnsupportedMediaType
from headwater.ingest.batch import DecodeLimits, ValidatedBatch, decode_and_validate
from headwater.model.schema import schema_from_dict

SCHEMA = schema_from_dict(
    {"name": "s", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "string"}]}
)
LIMITS = DecodeLimits(
    max_body_bytes=10_000, max_rows=5, max_depth=8, min_ts_ms=0, max_future_ms=10**9, max_errors=10
)
NDJSON = b'{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n'


def decode(
    body: bytes, content_type: str = "application/x-ndjson", encoding: str | None = None
) -> ValidatedBatch:
    return decode_and_validate(body, content_type, encoding, SCHEMA, LIMITS, now_ms=0)


def refused(
    body: bytes, content_type: str = "application/x-ndjson", encoding: str | None = None
) -> HeadwaterError:
    with pytest.raises(HeadwaterError) as caught:
        decode(body, content_type, encoding)
    return caught.value


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-ndjson; charset=utf-8",
        'Application/X-NDJSON;charset="UTF-8"',
    ],
)
def test_ndjson_media_types_are_accepted(content_type: str) -> None:
    assert decode(NDJSON, content_type).valid.num_rows == 2


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/xml", "", "application/json; charset=latin-1"]
)
def test_unknown_media_types_are_415(content_type: str) -> None:
    err = refused(b'{"a": 1}', content_type)
    assert isinstance(err, UnsupportedMediaType)
    assert err.code == "unsupported_media_type" and err.status == 415
    assert "application/json" in err.message or "UTF-8" in err.message


def test_gzip_body_is_inflated() -> None:
    batch = decode(gzip.compress(NDJSON), encoding="gzip")
    assert batch.valid.column("a").to_pylist() == [1, 2]


def test_multi_member_gzip_is_read_whole() -> None:
    body = gzip.compress(NDJSON) + gzip.compress(b'{"a": 3}\n')
    assert decode(body, encoding="gzip").valid.column("a").to_pylist() == [1, 2, 3]


def test_identity_encoding_is_a_no_op() -> None:
    assert decode(NDJSON, encoding="identity").valid.num_rows == 2


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "compress"])
def test_other_encodings_are_415(encoding: str) -> None:
    assert refused(NDJSON, encoding=encoding).code == "unsupported_media_type"


def test_gzip_bomb_is_refused_at_the_cap() -> None:
    small = gzip.compress(b"\n" * 20_000)  # 60 bytes in, 20 KB out; the cap is 10 KB
    err = refused(small, encoding="gzip")
    assert isinstance(err, PayloadTooLarge) and "inflates" in err.message


def test_a_hundredfold_gzip_bomb_stops_after_the_cap() -> None:
    bomb = gzip.compress(bytes(100_000_000), compresslevel=9)  # ~100 KB -> 100 MB
    limits = DecodeLimits(1_000_000, 100, 8, 0, 10**9, 10)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decode_and_validate(bomb, "application/x-ndjson", "gzip", SCHEMA, limits, now_ms=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # it never inflated the whole 100 MB


def test_gzip_with_a_lying_size_trailer_is_still_capped() -> None:
    body = bytearray(gzip.compress(b"x" * 50_000))
    body[-4:] = (10).to_bytes(4, "little")  # ISIZE claims 10 bytes
    assert isinstance(refused(bytes(body), encoding="gzip"), PayloadTooLarge)


@pytest.mark.parametrize(
    "body", [b"not gzip at all", gzip.compress(NDJSON, mtime=0)[:-12]], ids=["plain", "cut"]
)
def test_damaged_gzip_is_400(body: bytes) -> None:
    err = refused(body, encoding="gzip")
    assert err.status == 400 and err.code == "malformed_gzip"


def test_raw_deflate_stream_is_not_mistaken_for_gzip() -> None:
    assert refused(zlib.compress(NDJSON), encoding="gzip").code == "malformed_gzip"


def test_oversized_body_is_413() -> None:
    assert isinstance(refused(b" " * 10_001), PayloadTooLarge)


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/json", "text/csv"])
def test_invalid_utf8_is_400_with_its_position(content_type: str) -> None:
    err = refused(b'{"a": 1, "b": "caf\xe9"}\n', content_type)
    assert err.code == "invalid_encoding" and err.status == 400
    assert "byte 18" in err.message and "UTF-8" in err.message


@pytest.mark.parametrize(
    "content_type", ["application/x-ndjson", "application/json", "text/csv", "avro/binary"]
)
@pytest.mark.parametrize("body", [b"", b"  \n\r\n\t "])
def test_empty_body_is_400(content_type: str, body: bytes) -> None:
    err = refused(body, content_type)
    assert err.code in ("empty_body", "malformed_avro") and err.status == 400
    if content_type != "avro/binary" or not body:
        assert err.code == "empty_body"


def test_utf8_byte_order_mark_is_ignored() -> None:
    assert decode(b"\xef\xbb\xbf" + NDJSON).valid.num_rows == 2


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-ndjson", b'{"a": 1}\n' * 6),
        ("application/json", b"[" + b",".join([b'{"a": 1}'] * 6) + b"]"),
        ("text/csv", b"a\n" + b"1\n" * 6),
    ],
)
def test_more_rows_than_allowed_is_413(content_type: str, body: bytes) -> None:
    err = refused(body, content_type)
    assert err.code == "too_many_rows" and err.status == 413
    assert "6" in err.message and "5" in err.message


def test_exactly_max_rows_is_fine() -> None:
    assert decode(b'{"a": 1}\n' * 5).valid.num_rows == 5


def test_limits_come_from_settings() -> None:
    from headwater.settings import Settings

    limits = DecodeLimits.from_settings(Settings(timestamp_min="2000-01-01T00:00:00Z"))
    assert limits.max_body_bytes == 64 * 1024 * 1024 and limits.max_rows == 100_000
    assert limits.min_ts_ms == 946_684_800_000 and limits.max_future_ms == 86_400_000
    assert limits.max_depth == 32 and limits.max_errors == 1000


def test_batch_counts() -> None:
    batch = decode(NDJSON + b'{"a": "x"}\n')
    assert (batch.accepted, batch.rejected, batch.total_rows) == (2, 1, 3)
    assert batch.valid_rows.type == "int64"
