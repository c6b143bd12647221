"""The request body before decoding: media type, content encoding, text checks.

Everything here is request-level: a problem rejects the whole body with a
``HeadwaterError`` whose code clients can match on.
"""

from __future__ import annotations

import zlib
from typing import Any, Literal

from headwater.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

Format = Literal["json", "ndjson", "csv", "avro"]

MEDIA_TYPES: dict[str, Format] = {
    "application/json": "json",
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "application/x-jsonlines": "ndjson",
    "application/jsonlines": "ndjson",
    "text/csv": "csv",
    "application/csv": "csv",
    "avro/binary": "avro",
    "application/avro": "avro",
    "application/vnd.apache.avro+binary": "avro",
}
TEXT_CHARSETS = {"utf-8", "utf8", "us-ascii", "ascii"}
UTF8_BOM = b"\xef\xbb\xbf"
SUPPORTED = "application/json, application/x-ndjson, text/csv or avro/binary"


def media_format(content_type: str | None) -> Format:
    """Map a Content-Type header to a body format; refuse what cannot be decoded.

    >>> media_format("application/json; charset=utf-8")
    'json'
    """
    if not content_type or not content_type.strip():
        raise UnsupportedMediaType(f"the request has no Content-Type; send one of {SUPPORTED}")
    media, *params = (part.strip() for part in content_type.split(";"))
    fmt = MEDIA_TYPES.get(media.lower())
    if fmt is None:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not supported; send one of {SUPPORTED}"
        )
    for param in params:
        key, _, value = param.partition("=")
        charset = value.strip().strip('"').lower()
        if key.strip().lower() == "charset" and fmt != "avro" and charset not in TEXT_CHARSETS:
            raise UnsupportedMediaType(
                f"charset {charset!r} is not supported; encode the body as UTF-8"
            )
    return fmt


def inflate(body: bytes, content_encoding: str | None, limit: int, max_members: int = 64) -> bytes:
    """Undo ``Content-Encoding``, never producing more than ``limit`` bytes.

    Decompression streams with an output cap, so a small gzip bomb costs at most
    ``limit`` bytes of memory before it is refused; a body of more than ``max_members``
    gzip members is refused, and the work is linear in the body's size.
    """
    if len(body) > limit:
        raise PayloadTooLarge(f"the body is {len(body)} bytes; the limit is {limit}")
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise UnsupportedMediaType(
            f"Content-Encoding {content_encoding!r} is not supported; send gzip or no encoding"
        )
    return _gunzip(body, limit, max_members)


# Input is fed in slices: at the end of a member zlib copies the input it did not use,
# which for a whole body of many members would cost quadratic time.
GUNZIP_SLICE = 64 * 1024


def _gunzip(body: bytes, limit: int, max_members: int) -> bytes:
    out: list[bytes] = []
    size = members = pos = 0
    view = memoryview(body)
    inflater: Any = None
    pending = b""  # input left over after the previous member's end
    # A gzip stream may hold several members back to back (RFC 1952 §2.2).
    while pending or pos < len(body):
        if inflater is None:
            members += 1
            if members > max_members:
                raise BadRequest(
                    f"the gzip body holds more than {max_members} members; compress it as one",
                    code="too_many_gzip_members",
                )
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        data: bytes | memoryview = pending or view[pos : pos + GUNZIP_SLICE]
        if not pending:
            pos += len(data)
        pending = b""
        try:
            chunk = inflater.decompress(data, limit - size + 1)
        except zlib.error as exc:
            raise BadRequest(
                f"the body is not valid gzip ({exc}); compress it with gzip or drop Content-Encoding",
                code="malformed_gzip",
            ) from exc
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the body inflates to more than {limit} bytes; send it in smaller requests"
            )
        out.append(chunk)
        if inflater.eof:
            pending, inflater = inflater.unused_data, None
    if inflater is not None:
        raise BadRequest(
            "the gzip body is truncated; send the complete compressed body",
            code="malformed_gzip",
        )
    return b"".join(out)


def as_text(data: bytes) -> bytes:
    """Check that a text body is UTF-8 and drop a byte-order mark; returns the bytes."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise BadRequest(
                f"the body is not valid UTF-8 (byte {exc.start}, line {line}); encode it as UTF-8",
                code="invalid_encoding",
            ) from exc
    if not data.strip():
        raise empty_body()
    return data


def empty_body() -> BadRequest:
    return BadRequest("the body holds no events; send at least one row", code="empty_body")


def too_many_rows(count: int | str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the body holds {count} rows; at most {limit} are accepted per request, split it",
        code="too_many_rows",
    )
