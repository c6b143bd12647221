"""NDJSON and JSON bodies to typed columns.

Fast path: one typed msgspec decode of the whole body into ``gc=False`` structs
generated from the stream schema (types checked in C, unknown keys skipped without
being built), then one conversion of row tuples into an Arrow struct array. On
200-byte events this decodes into typed Arrow faster than ``pyarrow.json`` with an
explicit schema parses alone (see ``benchmarks/decode.py``).

Slow path, only for bodies with a bad row: each row (line or array element) is
decoded on its own, typed first and untyped when that fails, so a bad row becomes a
row error and every other row still converts to exactly the value the fast path
would give it. JSON arrays are split into elements on the bytes (``depth``), so an
unparseable element does not sink the others.

Nesting depth is measured on the bytes (``depth``), never by recursing: for NDJSON
before parsing, for arrays after the decode (which has its own recursion limit).
A bracket count rules most bodies out; only what might be too deep is measured
exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import repeat
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa

from headwater.errors import BadRequest
from headwater.ingest.body import as_text, empty_body, too_many_rows
from headwater.ingest.convert import (
    ARROW_ERRORS,
    CHECK_TYPES,
    RAW_TYPES,
    from_checked,
    from_checked_arrow,
    from_values,
    kind,
)
from headwater.ingest.depth import Ints, array_layout, deep_spans, max_depth_of
from headwater.ingest.model import CellError, Decoded, DecodeLimits, Problem
from headwater.ingest.plan import per_schema
from headwater.model.schema import ARROW_TYPES, StreamSchema

ANY = msgspec.json.Decoder()
ROW_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class RowCodec:
    """Typed decoders for one schema's rows, and the getters that read them back."""

    def __init__(self, schema: StreamSchema) -> None:
        attrs = [f"f{i}" for i in range(len(schema.fields))]
        # Positional attribute names: field names may be Python keywords.
        self.row: type[Any] = msgspec.defstruct(
            "Row",
            [
                (a, CHECK_TYPES[kind(f)] | None, None)
                for a, f in zip(attrs, schema.fields, strict=True)
            ],
            rename=dict(zip(attrs, schema.field_names, strict=True)),
            gc=False,
        )
        self.line = msgspec.json.Decoder(self.row)
        self.body = msgspec.json.Decoder(list[self.row] | self.row)  # type: ignore[name-defined]
        self.getters = [attrgetter(a) for a in attrs]
        # Non-json fields go to Arrow in one pass: a tuple per row into a struct array.
        self.flat = [i for i, f in enumerate(schema.fields) if kind(f) != "json"]
        self.tuples = attrgetter(*(attrs[i] for i in self.flat)) if len(self.flat) > 1 else None
        self.struct = pa.struct(
            [pa.field(attrs[i], RAW_TYPES[kind(schema.fields[i])]) for i in self.flat]
        )


@lru_cache(maxsize=256)
def _codec(encoded_schema: bytes) -> RowCodec:
    return RowCodec(msgspec.json.decode(encoded_schema, type=StreamSchema))


@per_schema
def codec_for(schema: StreamSchema) -> RowCodec:
    """The row codec of ``schema``, shared by equal schemas."""
    return _codec(msgspec.json.encode(schema))


def decode_ndjson(data: bytes, schema: StreamSchema, limits: DecodeLimits) -> Decoded:
    """Decode newline-delimited JSON; blank lines are skipped and are not rows."""
    data = as_text(data)
    buf = np.frombuffer(data, np.uint8)
    starts, ends, opening = _line_spans(data, buf)
    if len(starts) == 0:
        raise empty_body()
    if len(starts) > limits.max_rows:
        raise too_many_rows(len(starts), limits.max_rows)
    deep = deep_spans(buf, starts, ends, limits.max_depth, opening)
    codec = codec_for(schema)
    raw = _span_text(data, starts, ends)
    if deep.size == 0:
        try:
            structs = codec.line.decode_lines(data)
        except ROW_ERRORS:
            structs = None
        # Two objects on one line decode as two rows: that line must take the slow path.
        if structs is not None and len(structs) == len(starts):
            return _from_structs(structs, codec, schema, raw)
    return _one_by_one(data, starts, ends, set(deep.tolist()), codec, schema, limits, raw)


def decode_json(data: bytes, schema: StreamSchema, limits: DecodeLimits) -> Decoded:
    """Decode one JSON object or a JSON array of objects."""
    data = as_text(data)
    buf = np.frombuffer(data, np.uint8)
    lead = data.lstrip()[:1]
    if lead not in (b"[", b"{"):
        raise malformed("the body must be a JSON object or an array of objects")
    codec = codec_for(schema)
    if lead == b"{":
        return _single_object(data, max_depth_of(buf), codec, schema, limits)
    # n elements need n - 1 commas: count exactly only when the commas allow too many.
    if int(np.count_nonzero(buf == 0x2C)) + 1 > limits.max_rows:
        layout = array_layout(buf)
        if layout is not None and len(layout.starts) > limits.max_rows:
            raise too_many_rows(len(layout.starts), limits.max_rows)
    error: Exception | None = None
    try:
        # The decoder skips unknown keys without building them and has its own
        # recursion limit, so depth is checked after it, and cheaply when possible.
        structs = codec.body.decode(data)
        if _shallow(buf, len(structs), limits.max_depth):
            return _from_structs(structs, codec, schema, lazy_elements(data))
    except ROW_ERRORS as exc:
        error = exc
    layout = array_layout(buf)
    if layout is None:
        raise not_json(data, error)
    deep = set(np.flatnonzero(layout.depths > limits.max_depth).tolist())
    raw = _span_text(data, layout.starts, layout.ends)
    return _one_by_one(data, layout.starts, layout.ends, deep, codec, schema, limits, raw)


def _shallow(buf: np.ndarray[Any, Any], elements: int, max_depth: int) -> bool:
    """Whether no element of a decoded array of objects nests deeper than ``max_depth``.

    Each element holds at least one '{', so none holds more than the body's count
    less the array's '[' and the other elements' braces; measure only if that is not enough.
    """
    openers = int(np.count_nonzero((buf | 0x20) == 0x7B))
    return openers - elements <= max_depth or max_depth_of(buf) - 1 <= max_depth


def malformed(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_json")


def not_json(data: bytes, error: Exception | None) -> BadRequest:
    """The error of a body that does not parse as JSON, with a hint when it is NDJSON.

    >>> not_json(b'{"a": 1}\\n{"a": 2}\\n', None).message
    'the body holds one JSON object per line, not one JSON document: send application/x-ndjson for one object per line'
    """
    if looks_like_ndjson(data):
        return malformed(
            "the body holds one JSON object per line, not one JSON document: "
            "send application/x-ndjson for one object per line"
        )
    return malformed(f"the body is not valid JSON ({error}); fix its syntax")


def looks_like_ndjson(data: bytes) -> bool:
    """Whether the first line is a whole JSON object (or array) and more lines follow."""
    first, _, rest = data.lstrip().partition(b"\n")
    if not rest.strip():
        return False
    try:
        return isinstance(ANY.decode(first), dict | list)
    except ROW_ERRORS:
        return False


def _single_object(
    data: bytes, depth: int, codec: RowCodec, schema: StreamSchema, limits: DecodeLimits
) -> Decoded:
    raw = _whole(data)
    if depth > limits.max_depth:
        problem = Problem(0, "too_deep", _too_deep(limits))
        return _decoded([], schema, [], [problem], 1, raw, rows=[])
    try:
        return _from_structs([codec.line.decode(data)], codec, schema, raw)
    except msgspec.ValidationError:
        pass
    except ROW_ERRORS as exc:
        raise not_json(data, exc) from exc
    try:
        value = ANY.decode(data)
    except ROW_ERRORS as exc:
        raise not_json(data, exc) from exc
    columns = [from_values([value.get(f.name)], f) for f in schema.fields]
    return _decoded([c for c, _ in columns], schema, [e for _, e in columns], [], 1, raw, rows=[0])


def _from_structs(
    structs: Sequence[Any], codec: RowCodec, schema: StreamSchema, raw: Callable[[int], str]
) -> Decoded:
    if not isinstance(structs, list):
        structs = [structs]
    columns, errors = _convert_structs(structs, codec, schema)
    return _decoded(columns, schema, errors, [], len(structs), raw)


def _convert_structs(
    structs: list[Any], codec: RowCodec, schema: StreamSchema
) -> tuple[list[pa.Array], list[list[CellError]]]:
    flat: dict[int, pa.Array] = {}
    if codec.tuples is not None:
        try:
            rows = list(map(codec.tuples, structs))  # a list converts faster than an iterator
            arrays = pa.array(rows, type=codec.struct).flatten()
            flat = dict(zip(codec.flat, arrays, strict=True))
        except ARROW_ERRORS:  # an integer beyond int64: convert field by field below
            flat = {}
    converted = [
        from_checked_arrow(flat[k], f) if k in flat else from_checked(list(map(get, structs)), f)
        for k, (get, f) in enumerate(zip(codec.getters, schema.fields, strict=True))
    ]
    return [c for c, _ in converted], [e for _, e in converted]


def _one_by_one(
    data: bytes,
    starts: Ints,
    ends: Ints,
    deep: set[int],
    codec: RowCodec,
    schema: StreamSchema,
    limits: DecodeLimits,
    raw: Callable[[int], str],
) -> Decoded:
    structs: list[Any] = []
    struct_rows: list[int] = []
    objects: list[dict[str, Any]] = []
    object_rows: list[int] = []
    problems: list[Problem] = []
    for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if i in deep:
            problems.append(Problem(i, "too_deep", _too_deep(limits)))
            continue
        value = _decode_row(data[start:end], codec)
        if isinstance(value, Problem):
            problems.append(Problem(i, value.code, value.message))
        elif type(value) is dict:
            objects.append(value)
            object_rows.append(i)
        else:
            structs.append(value)
            struct_rows.append(i)
    # Rows the typed decoder took convert as fast as on the fast path; only rows
    # with a wrong type are checked value by value.
    columns, errors = _convert_structs(structs, codec, schema)
    if objects:
        extra = [
            from_values(list(map(dict.get, objects, repeat(f.name))), f) for f in schema.fields
        ]
        columns, errors = _in_row_order(columns, errors, extra, struct_rows + object_rows)
    rows = sorted(struct_rows + object_rows)
    return _decoded(columns, schema, errors, problems, len(starts), raw, rows)


def _in_row_order(
    columns: list[pa.Array],
    errors: list[list[CellError]],
    extra: list[tuple[pa.Array, list[CellError]]],
    rows: list[int],
) -> tuple[list[pa.Array], list[list[CellError]]]:
    """Append ``extra`` rows to the columns and put all rows back in request order."""
    order = np.argsort(np.asarray(rows), kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    shift = len(columns[0]) if columns else 0
    merged = [
        pa.concat_arrays([c, e]).take(pa.array(order))
        for c, (e, _) in zip(columns, extra, strict=True)
    ]
    moved = [
        sorted(
            [CellError(int(where[x.pos]), x.code, x.message) for x in mine]
            + [CellError(int(where[shift + x.pos]), x.code, x.message) for x in theirs],
            key=lambda x: x.pos,
        )
        for mine, (_, theirs) in zip(errors, extra, strict=True)
    ]
    return merged, moved


def _decode_row(text: bytes, codec: RowCodec) -> Any:
    """A typed struct, a plain dict for a row with a wrong type, or the Problem."""
    try:
        return codec.line.decode(text)
    except msgspec.ValidationError:
        pass
    except ROW_ERRORS as exc:
        return Problem(0, "malformed_json", f"the row is not valid JSON ({exc}); fix its syntax")
    try:
        value = ANY.decode(text)
    except ROW_ERRORS as exc:
        return Problem(0, "malformed_json", f"the row is not valid JSON ({exc}); fix its syntax")
    if type(value) is not dict:
        got = "an array" if type(value) is list else f"{type(value).__name__} {value!r}"[:60]
        return Problem(0, "not_an_object", f"each row must be a JSON object, got {got}")
    return value


def _decoded(
    columns: list[Any],
    schema: StreamSchema,
    errors: list[Any],
    problems: list[Problem],
    total: int,
    raw: Callable[[int], str],
    rows: list[int] | None = None,
) -> Decoded:
    if not columns:
        columns = [pa.array([], type=ARROW_TYPES[f.type]) for f in schema.fields]
        errors = [[] for _ in schema.fields]
    index = np.arange(total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    return Decoded(columns, errors, index, problems, total, raw)


def _line_spans(data: bytes, buf: np.ndarray[Any, Any]) -> tuple[Ints, Ints, int]:
    """Byte spans of the non-blank lines, and how many of them open with '{'."""
    newlines = np.flatnonzero(buf == 0x0A)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [len(buf)])).astype(np.int64)
    filled = ends > starts
    first = buf[np.minimum(starts, max(len(buf) - 1, 0))]
    keep = filled & (first == 0x7B)
    opening = int(np.count_nonzero(keep))
    # Only lines not opening with '{' need a look: they may be whitespace only.
    for i in np.flatnonzero(filled & ~keep).tolist():
        keep[i] = bool(data[starts[i] : ends[i]].strip(b" \t\r"))
    return starts[keep], ends[keep], opening


def _span_text(data: bytes, starts: Ints, ends: Ints) -> Callable[[int], str]:
    def text(i: int) -> str:
        return data[int(starts[i]) : int(ends[i])].decode("utf-8", "replace").strip()

    return text


def _whole(data: bytes) -> Callable[[int], str]:
    return lambda _: data.decode("utf-8", "replace").strip()


def lazy_elements(data: bytes) -> Callable[[int], str]:
    """Element texts of a JSON array, split only if some row is rejected."""
    cache: list[Callable[[int], str]] = []

    def text(i: int) -> str:
        if not cache:
            layout = array_layout(np.frombuffer(data, np.uint8))
            if layout is None:  # a single object body
                cache.append(_whole(data))
            else:
                cache.append(_span_text(data, layout.starts, layout.ends))
        return cache[0](i)

    return text


def _too_deep(limits: DecodeLimits) -> str:
    return f"the row nests deeper than {limits.max_depth} levels; flatten it"
