"""Cutting an NDJSON, JSON, CSV or Avro file into request bodies.

NDJSON, CSV and Avro are read as they are sent, never whole. A ``.json`` file is one JSON
document (an object, or an array of objects): it is read whole and each object is sent as
one NDJSON row; a ``.json`` file that is not one document is read as NDJSON.

Each :class:`Batch` is one ``POST /v1/streams/{name}/events`` body. Cutting is
deterministic: the same file with the same options gives the same bodies, so the
same idempotency keys (:func:`batch_key`), so a re-run is answered from the first run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

CONTENT_TYPES = {
    "ndjson": "application/x-ndjson", "json": "application/x-ndjson", "csv": "text/csv",
    "avro": "avro/binary",
}  # fmt: skip
EXTENSIONS = {
    ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv",
    ".avro": "avro", ".avr": "avro",
}  # fmt: skip


@dataclass
class Batch:
    """One request body: ``rows`` records, starting at file line ``lines[i]`` (text formats)."""

    index: int
    body: bytes
    rows: int
    consumed_bytes: int
    content_type: str
    lines: list[int | None] = field(default_factory=list)  # None: not a line of its own

    def line_of(self, row: int) -> int | None:
        return self.lines[row] if 0 <= row < len(self.lines) else None


def format_of(path: str, explicit: str | None) -> str:
    """The input format: ``explicit`` if given, else by extension (``.gz`` looked through)."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in CONTENT_TYPES:
            raise ValueError(f"unknown format {explicit!r}; use ndjson, json, csv or avro")
        return fmt
    name = path.lower().removesuffix(".gz")
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise ValueError(
        f"cannot tell the format of {path!r} from its name; pass --format ndjson, json, csv or avro"
    )


def batch_key(prefix: str, index: int, body: bytes) -> str:
    """The ``Idempotency-Key`` of a batch: its position and a digest of its (uncompressed) rows.

    A re-run of the same file with the same batch size sends the same rows under the same
    keys, so the server answers them from the first run instead of storing them twice.

    >>> batch_key("send", 3, b"x")
    'send:3:2d711642b726b044'
    """
    return f"{prefix}:{index}:{hashlib.sha256(body).hexdigest()[:16]}"


def gzip_body(body: bytes) -> bytes:
    """Gzip with a fixed header time, so a re-run sends the same bytes."""
    return gzip.compress(body, compresslevel=5, mtime=0)


def open_input(path: str, stdin: IO[bytes]) -> tuple[IO[bytes], int | None]:
    """The input as a binary stream and its size on disk (None for stdin)."""
    if path == "-":
        return stdin, None
    p = Path(path)
    if path.lower().endswith(".gz"):  # progress then counts uncompressed bytes, total unknown
        return cast("IO[bytes]", gzip.open(p, "rb")), None
    return open(p, "rb"), p.stat().st_size


def batches(
    fh: IO[bytes], fmt: str, batch_rows: int, max_batch_bytes: int = 8 << 20
) -> Iterator[Batch]:
    """Bodies of at most ``batch_rows`` records (and about ``max_batch_bytes``)."""
    if fmt == "avro":
        yield from avro_batches(fh, batch_rows)
        return
    recs = json_records(fh) if fmt == "json" else records(fh, quoted=fmt == "csv")
    header: bytes | None = None
    if fmt == "csv":
        first = next(recs, None)
        if first is None:
            return
        header = first[1]
    yield from text_batches(recs, fmt, batch_rows, max_batch_bytes, header)


def records(fh: Iterable[bytes], quoted: bool = False) -> Iterator[tuple[int | None, bytes, int]]:
    """``(line number, record, bytes read)`` for each non-blank record, line endings dropped.

    With ``quoted`` (CSV), a record goes on over line breaks inside a quoted field: it
    ends where its count of ``"`` is even (an escaped ``""`` counts two).
    """
    pending: list[bytes] = []
    quotes = 0
    start = 0
    size = 0
    for n, line in enumerate(fh, 1):
        size += len(line)
        if not pending:
            start = n
        pending.append(line)
        if quoted:
            quotes += line.count(b'"')
            if quotes % 2:
                continue
        rec = b"".join(pending).rstrip(b"\r\n")
        pending, quotes = [], 0
        if rec.strip():
            yield start, rec, size
            size = 0
    if pending:
        rec = b"".join(pending).rstrip(b"\r\n")
        if rec.strip():
            yield start, rec, size


def json_records(fh: IO[bytes]) -> Iterator[tuple[int | None, bytes, int]]:
    """The objects of a JSON document (an object or an array), one compact record each.

    Records of an array have no line number (``None``). A file that is not one JSON
    document (e.g. NDJSON named ``.json``) is read line by line instead.

    >>> list(json_records(io.BytesIO(b'[{"a": 1},\\n {"a": 2}]')))
    [(None, b'{"a":1}', 9), (None, b'{"a":2}', 12)]
    >>> list(json_records(io.BytesIO(b'{"a": 1}\\n{"a": 2}\\n')))
    [(1, b'{"a": 1}', 9), (2, b'{"a": 2}', 9)]
    """
    import orjson

    data = fh.read()
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        yield from records(io.BytesIO(data))
        return
    if isinstance(doc, dict):
        yield None, orjson.dumps(doc), len(data)
        return
    if not isinstance(doc, list):
        raise ValueError(
            f"a .json file holds an object or an array of objects, not a {type(doc).__name__}"
        )
    left = len(data)
    for i, item in enumerate(doc):
        rec = orjson.dumps(item)
        nbytes = left if i == len(doc) - 1 else min(left, len(rec) + 2)
        left -= nbytes
        yield None, rec, nbytes


def text_batches(
    recs: Iterable[tuple[int | None, bytes, int]],
    fmt: str,
    batch_rows: int,
    max_batch_bytes: int,
    header: bytes | None = None,
) -> Iterator[Batch]:
    ctype = CONTENT_TYPES[fmt]
    head = b"" if header is None else header + b"\n"
    index = 0
    parts: list[bytes] = []
    lines: list[int | None] = []
    size = consumed = 0
    for line, rec, nbytes in recs:
        parts.append(rec)
        lines.append(line)
        size += len(rec) + 1
        consumed += nbytes
        if len(parts) >= batch_rows or size >= max_batch_bytes:
            yield Batch(index, head + b"\n".join(parts), len(parts), consumed, ctype, lines)
            index += 1
            parts, lines, size, consumed = [], [], 0, 0
    if parts:
        yield Batch(index, head + b"\n".join(parts), len(parts), consumed, ctype, lines)


def avro_batches(fh: IO[bytes], batch_rows: int) -> Iterator[Batch]:
    """Re-encode the container's records, ``batch_rows`` at a time, as smaller containers.

    The writer schema is the file's own; the sync marker is derived from it, so the same
    records always encode to the same bytes.
    """
    import fastavro

    reader = fastavro.reader(fh)
    schema_json = reader.metadata.get("avro.schema", "")
    schema = fastavro.parse_schema(reader.writer_schema)
    sync = hashlib.sha256(str(schema_json).encode()).digest()[:16]
    index = 0
    last_pos = _tell(fh)
    chunk: list[Any] = []

    def emit() -> Batch:
        nonlocal last_pos
        out = io.BytesIO()
        fastavro.writer(out, schema, chunk, codec="null", sync_marker=sync)
        pos = _tell(fh)
        batch = Batch(
            index, out.getvalue(), len(chunk), max(0, pos - last_pos), CONTENT_TYPES["avro"]
        )
        last_pos = pos
        return batch

    for record in reader:
        chunk.append(record)
        if len(chunk) >= batch_rows:
            yield emit()
            index += 1
            chunk = []
    if chunk:
        yield emit()


def _tell(fh: IO[bytes]) -> int:
    try:
        return fh.tell()
    except (OSError, ValueError):
        return 0
