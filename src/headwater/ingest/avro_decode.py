"""Avro Object Container File bodies to typed columns, read with fastavro.

Guards before fastavro sees the data, because a hostile container can do worse
than fail: a recursive schema with deeply nested data overflows fastavro's C stack
(the process dies), an array of zero-size items (``null``) lets a tiny body declare
billions of items, and a deflate block can inflate a thousandfold. So recursive
schemas and arrays of zero-size items are refused, and deflate blocks are inflated
here under the body-size cap, the container being rewritten with the null codec.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable, Iterator
from itertools import islice, repeat
from typing import Any

import fastavro
import fastavro.read
import msgspec
import numpy as np

from headwater.errors import BadRequest, PayloadTooLarge
from headwater.ingest.body import empty_body, too_many_rows
from headwater.ingest.convert import from_values
from headwater.ingest.model import Decoded, DecodeLimits, Problem
from headwater.model.schema import StreamSchema

SYNC_BYTES = 16
CODECS = ("null", "deflate")


def decode_avro(data: bytes, schema: StreamSchema, limits: DecodeLimits) -> Decoded:
    """Decode an Avro container; each top-level record is a row."""
    if not data:
        raise empty_body()
    records = _read_records(_null_codec(data, limits.max_body_bytes), limits.max_rows)
    objects, rows, problems = [], [], []
    for i, record in enumerate(records):
        if isinstance(record, dict):
            objects.append(record)
            rows.append(i)
        else:
            problems.append(Problem(i, "not_an_object", "each Avro datum must be a record"))
    converted = [
        from_values(list(map(dict.get, objects, repeat(f.name))), f, limits.max_depth)
        for f in schema.fields
    ]
    return Decoded(
        [c for c, _ in converted],
        [e for _, e in converted],
        np.asarray(rows, dtype=np.int64),
        problems,
        len(records),
        _record_text(records),
    )


def malformed_avro(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_avro")


def _read_records(data: bytes, max_rows: int) -> list[Any]:
    try:
        reader = fastavro.reader(io.BytesIO(data))
    except Exception as exc:  # fastavro signals a bad header with assorted exception types
        raise malformed_avro(f"the body is not an Avro object container file ({exc})") from exc
    _check_writer_schema(reader.writer_schema)
    try:
        records = list(islice(reader, max_rows + 1))
    except Exception as exc:  # truncated blocks, bad sync markers, bad varints, bad UTF-8...
        raise malformed_avro(f"the Avro container is damaged ({exc}); resend the file") from exc
    if len(records) > max_rows:
        raise too_many_rows(f"more than {max_rows}", max_rows)
    return records


def _null_codec(data: bytes, limit: int) -> bytes:
    """The same container with every block uncompressed, inflated under ``limit`` bytes."""
    stream = io.BytesIO(data)
    try:
        header = fastavro.schemaless_reader(stream, fastavro.read.HEADER_SCHEMA, None)
    except Exception as exc:  # any damage to the header lands here
        raise malformed_avro(f"the body is not an Avro object container file ({exc})") from exc
    if not isinstance(header, dict) or header.get("magic") != b"Obj\x01":
        raise malformed_avro("the body is not an Avro object container file (bad magic bytes)")
    codec = header["meta"].get("avro.codec", b"null").decode("utf-8", "replace")
    if codec not in CODECS:
        raise malformed_avro(f"the Avro codec {codec!r} is not supported; use null or deflate")
    if codec == "null":
        return data
    header["meta"]["avro.codec"] = b"null"
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.read.HEADER_SCHEMA, header)
    size = 0
    for count, payload in _blocks(data, stream.tell(), header["sync"]):
        inflated = _inflate(payload, limit - size)
        size += len(inflated)
        out.write(_long(count) + _long(len(inflated)) + inflated + header["sync"])
    return out.getvalue()


def _blocks(data: bytes, pos: int, sync: bytes) -> Iterator[tuple[int, bytes]]:
    while pos < len(data):
        count, pos = _read_long(data, pos)
        size, pos = _read_long(data, pos)
        end = pos + size
        if count < 0 or size < 0 or end + SYNC_BYTES > len(data):
            raise malformed_avro("an Avro block declares more bytes than the body holds")
        if data[end : end + SYNC_BYTES] != sync:
            raise malformed_avro("an Avro block does not end with the file's sync marker")
        yield count, data[pos:end]
        pos = end + SYNC_BYTES


def _inflate(payload: bytes, room: int) -> bytes:
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        out = inflater.decompress(payload, room + 1)
    except zlib.error as exc:
        raise malformed_avro(f"an Avro deflate block is damaged ({exc})") from exc
    if len(out) > room:
        raise PayloadTooLarge(
            "the Avro blocks inflate past the body size limit; send smaller files"
        )
    return out


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """Read one zigzag varint (Avro ``long``) at ``pos``."""
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise malformed_avro("an Avro block header is truncated or damaged")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (value >> 1) ^ -(value & 1), pos


def _long(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _check_writer_schema(writer: Any) -> None:
    """Refuse recursive named types and arrays of items that take no bytes."""
    records: dict[str, Any] = {}
    stack: list[tuple[Any, frozenset[str]]] = [(writer, frozenset())]
    while stack:
        node, enclosing = stack.pop()
        if isinstance(node, str):
            if _short(node) in enclosing:
                raise malformed_avro(f"the Avro schema is recursive (type {node!r}); flatten it")
            if _short(node) in records:
                stack.append((records[_short(node)], enclosing))
            continue
        if isinstance(node, list):
            stack.extend((branch, enclosing) for branch in reversed(node))
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "record" or kind == "error":
            name = _short(str(node.get("name", "")))
            records[name] = node
            inner = enclosing | {name}
            # Reversed, so fields are visited in schema order: names are defined before use.
            stack.extend((f.get("type"), inner) for f in reversed(node.get("fields", [])))
        elif kind == "array":
            if _takes_no_bytes(node.get("items"), records):
                raise malformed_avro("the Avro schema has an array of items that take no bytes")
            stack.append((node.get("items"), enclosing))
        elif kind == "map":
            stack.append((node.get("values"), enclosing))
        elif not isinstance(kind, str) or kind not in ("enum", "fixed"):
            stack.append((kind, enclosing))


def _takes_no_bytes(node: Any, records: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    if isinstance(node, str):
        if _short(node) in seen:
            return False
        seen = seen | {_short(node)}
        node = records.get(_short(node), node)
    if node == "null" or node == {"type": "null"}:
        return True
    if isinstance(node, dict) and node.get("type") == "fixed":
        return bool(node.get("size", 1) == 0)
    if isinstance(node, dict) and node.get("type") in ("record", "error"):
        seen = seen | {_short(str(node.get("name", "")))}
        return all(_takes_no_bytes(f.get("type"), records, seen) for f in node.get("fields", []))
    return False


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _record_text(records: list[Any]) -> Callable[[int], str]:
    def text(i: int) -> str:
        try:
            return msgspec.json.encode(records[i], enc_hook=str).decode()
        except (TypeError, ValueError):
            return json.dumps(records[i], default=str)

    return text
