"""Cutting files into request bodies: deterministic, record-aware, bounded."""

from __future__ import annotations

import io

import fastavro
import pytest

from headwater.cli.batches import batch_key, batches, format_of, gzip_body, records

SCHEMA = {
    "type": "record",
    "name": "R",
    "fields": [{"name": "device_id", "type": "string"}, {"name": "temperature", "type": "double"}],
}


def test_ndjson_batches_skip_blank_lines_and_keep_line_numbers() -> None:
    data = b'{"a":1}\r\n\n{"a":2}\n{"a":3}\n   \n{"a":4}'
    out = list(batches(io.BytesIO(data), "ndjson", batch_rows=3))
    assert [b.rows for b in out] == [3, 1]
    assert out[0].body == b'{"a":1}\n{"a":2}\n{"a":3}'
    assert out[1].body == b'{"a":4}'
    assert out[0].lines == [1, 3, 4] and out[1].lines == [6]
    assert out[0].content_type == "application/x-ndjson"
    assert sum(b.consumed_bytes for b in out) == len(data)


def test_csv_batches_repeat_the_header_and_keep_quoted_newlines_in_one_record() -> None:
    data = b'a,b\n1,"x\ny"\n2,"say ""hi"""\n3,z\n'
    out = list(batches(io.BytesIO(data), "csv", batch_rows=2))
    assert [b.body for b in out] == [b'a,b\n1,"x\ny"\n2,"say ""hi"""', b"a,b\n3,z"]
    assert out[0].lines == [2, 4] and out[1].lines == [5]
    assert out[0].line_of(1) == 4 and out[0].line_of(7) is None


def test_header_only_csv_and_empty_files_give_no_batches() -> None:
    assert list(batches(io.BytesIO(b"a,b\n"), "csv", 10)) == []
    assert list(batches(io.BytesIO(b""), "ndjson", 10)) == []


def test_a_batch_closes_at_the_byte_bound() -> None:
    data = b"\n".join(b'{"v":"' + b"x" * 100 + b'"}' for _ in range(10))
    out = list(batches(io.BytesIO(data), "ndjson", batch_rows=1000, max_batch_bytes=350))
    assert [b.rows for b in out] == [4, 4, 2]


def test_unterminated_quote_runs_to_the_end() -> None:
    assert [r[1] for r in records([b'1,"open\n', b"still\n"], quoted=True)] == [b'1,"open\nstill']


def test_avro_batches_are_containers_with_the_same_bytes_every_time() -> None:
    buf = io.BytesIO()
    rows = [{"device_id": f"d{i}", "temperature": float(i)} for i in range(25)]
    fastavro.writer(buf, SCHEMA, rows, codec="deflate")
    first = list(batches(io.BytesIO(buf.getvalue()), "avro", batch_rows=10))
    again = list(batches(io.BytesIO(buf.getvalue()), "avro", batch_rows=10))
    assert [b.rows for b in first] == [10, 10, 5]
    assert [b.body for b in first] == [b.body for b in again]
    decoded = [r for b in first for r in fastavro.reader(io.BytesIO(b.body))]
    assert decoded == rows
    assert first[0].content_type == "avro/binary"


@pytest.mark.parametrize(
    ("path", "fmt"),
    [("a.ndjson", "ndjson"), ("a.JSONL", "ndjson"), ("x/a.csv.gz", "csv"), ("a.avro", "avro")],
)
def test_format_by_extension(path: str, fmt: str) -> None:
    assert format_of(path, None) == fmt


def test_format_must_be_known() -> None:
    assert format_of("-", "CSV") == "csv"
    with pytest.raises(ValueError, match="--format"):
        format_of("-", None)
    with pytest.raises(ValueError, match="unknown format"):
        format_of("a.csv", "xml")


def test_batch_keys_depend_on_prefix_index_and_body_only() -> None:
    k = batch_key("send", 0, b"rows")
    assert k == batch_key("send", 0, b"rows")
    assert (
        len(
            {
                k,
                batch_key("send", 1, b"rows"),
                batch_key("send", 0, b"other"),
                batch_key("x", 0, b"rows"),
            }
        )
        == 4
    )


def test_gzip_is_deterministic() -> None:
    assert gzip_body(b"abc" * 100) == gzip_body(b"abc" * 100)
