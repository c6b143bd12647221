"""Properties of decode + validate, checked with Hypothesis.

(a) Valid events decode to the same Arrow table from NDJSON, JSON, CSV and Avro.
(b) On mixes of valid and invalid rows, the rejected rows and codes equal those of
    a plain per-row reference validator written here (the oracle), and valid rows
    round-trip exactly.
(c) On arbitrary bytes, decoding raises nothing but HeadwaterError.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.errors import HeadwaterError
from headwater.ingest.batch import DecodeLimits, ValidatedBatch, decode_and_validate
from headwater.model.schema import ARROW_TYPES, StreamSchema, schema_from_dict
from headwater.model.time import parse_iso_ms

NOW = parse_iso_ms("2026-11-21T12:00:00Z")
MIN_TS = parse_iso_ms("2000-01-01T00:00:00Z")
FUTURE = 3_600_000
MAX_DEPTH = 4
LIMITS = DecodeLimits(1 << 22, 500, MAX_DEPTH, MIN_TS, FUTURE, 100)
FIELDS: list[dict[str, Any]] = [
    {"name": "id", "type": "string", "required": True},
    {"name": "ts", "type": "timestamp"},
    {"name": "value", "type": "float", "min": -1000, "max": 1000},
    {"name": "count", "type": "int", "min": 0},
    {"name": "flag", "type": "bool"},
    {"name": "status", "type": "string", "enum": ["a", "b", "c"]},
    {"name": "code", "type": "string", "regex": "^[a-z]{2}[0-9]$"},
    {"name": "note", "type": "string", "max_length": 5},
    {"name": "epoch", "type": "timestamp", "unit": "ms"},
    {"name": "meta", "type": "json"},
]
SCHEMA = schema_from_dict(
    {
        "name": "props",
        "fields": FIELDS,
        "event_time": "ts",
        "rules": [{"expr": "epoch >= ts", "code": "epoch_before_ts"}],
    }
)
PROPERTY = settings(
    max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT64 = (-(2**63), 2**63 - 1)


def decode(body: bytes, content_type: str, schema: StreamSchema = SCHEMA) -> ValidatedBatch:
    return decode_and_validate(body, content_type, None, schema, LIMITS, NOW)


# ---------------------------------------------------------------- generators

safe_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=10,
)
in_range_ms = st.integers(MIN_TS, NOW + FUTURE)
offsets = st.sampled_from([0, 0, 60, -90, 330, 840, -720])


@st.composite
def iso_text(draw: st.DrawFn, ms: int) -> str:
    """An ISO-8601 rendering of ``ms`` with an offset, maybe with sub-millisecond digits."""
    zone = timezone(timedelta(minutes=draw(offsets)))
    when = EPOCH + timedelta(milliseconds=ms)
    digits = draw(st.sampled_from([0, 3, 6, 9] if ms % 1000 == 0 else [3, 6, 9]))
    local = when.astimezone(zone)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{ms % 1000:03d}" + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=6, max_size=6))
    )
    text += "." + fraction[:digits] if digits else ""
    offset = local.strftime("%z")
    return text + (
        "Z" if offset == "+0000" and draw(st.booleans()) else offset[:3] + ":" + offset[3:]
    )


@st.composite
def valid_event(draw: st.DrawFn) -> dict[str, Any]:
    ts = draw(in_range_ms)
    event: dict[str, Any] = {"id": draw(safe_text), "ts": ts}
    event["value"] = draw(st.none() | st.floats(-1000, 1000, allow_nan=False))
    event["count"] = draw(st.none() | st.integers(0, INT64[1]))
    event["flag"] = draw(st.none() | st.booleans())
    event["status"] = draw(st.none() | st.sampled_from(["a", "b", "c"]))
    event["code"] = draw(st.none() | st.from_regex(r"[a-z]{2}[0-9]", fullmatch=True))
    event["note"] = draw(
        st.none()
        | st.text(st.characters(codec="ascii", blacklist_characters="\x00"), min_size=1, max_size=5)
    )
    event["epoch"] = draw(st.none() | st.integers(ts, NOW + FUTURE))
    event["meta"] = draw(
        st.none() | st.dictionaries(st.text(max_size=4), st.integers(*INT64), max_size=3)
    )
    event["_iso"] = draw(iso_text(ts))
    return event


# ---------------------------------------------------------------- (a) formats agree


def expected_table(events: list[dict[str, Any]]) -> pa.Table:
    columns = {}
    for f in FIELDS:
        values = [e[f["name"]] for e in events]
        if f["type"] == "timestamp":
            columns[f["name"]] = pa.array(values, pa.int64()).cast(ARROW_TYPES["timestamp"])
        elif f["type"] == "json":
            columns[f["name"]] = pa.array(
                [
                    None if v is None else json.dumps(v, separators=(",", ":"), ensure_ascii=False)
                    for v in values
                ],
                pa.string(),
            )
        else:
            columns[f["name"]] = pa.array(values, ARROW_TYPES[f["type"]])
    return pa.table(columns)


def as_json_row(e: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in e.items() if not k.startswith("_") and v is not None}
    row["ts"] = e["_iso"]
    return row


def as_ndjson(events: list[dict[str, Any]]) -> bytes:
    return "\n".join(
        json.dumps(as_json_row(e), ensure_ascii=i % 2 == 0) for i, e in enumerate(events)
    ).encode()


def as_json_array(events: list[dict[str, Any]]) -> bytes:
    return ("[\n " + ",\n ".join(json.dumps(as_json_row(e)) for e in events) + "\n]").encode()


def as_csv(events: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    names = [f["name"] for f in FIELDS]
    writer.writerow(names)
    for e in events:
        row = as_json_row(e)
        cells = []
        for name in names:
            v = row.get(name)
            if v is None:
                cells.append("")
            elif isinstance(v, bool):
                cells.append("true" if v else "false")
            elif isinstance(v, float):
                cells.append(repr(v))
            elif isinstance(v, dict):
                cells.append(json.dumps(v))
            else:
                cells.append(str(v))
        writer.writerow(cells)
    return out.getvalue().encode()


AVRO = fastavro.parse_schema(
    {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "value", "type": ["null", "double"]},
            {"name": "count", "type": ["null", "long"]},
            {"name": "flag", "type": ["null", "boolean"]},
            {"name": "status", "type": ["null", "string"]},
            {"name": "code", "type": ["null", "string"]},
            {"name": "note", "type": ["null", "string"]},
            {"name": "epoch", "type": ["null", "long"]},
            {"name": "meta", "type": ["null", {"type": "map", "values": "long"}]},
        ],
    }
)


def as_avro(events: list[dict[str, Any]]) -> bytes:
    records = [
        {k: v for k, v in e.items() if not k.startswith("_")}
        | {"ts": EPOCH + timedelta(milliseconds=e["ts"])}
        for e in events
    ]
    out = io.BytesIO()
    fastavro.writer(out, AVRO, records)
    return out.getvalue()


@PROPERTY
@given(st.lists(valid_event(), min_size=1, max_size=25))
def test_valid_events_decode_to_the_same_table_from_every_format(
    events: list[dict[str, Any]],
) -> None:
    expected = expected_table(events)
    for content_type, body in [
        ("application/x-ndjson", as_ndjson(events)),
        ("application/json", as_json_array(events)),
        ("text/csv", as_csv(events)),
        ("avro/binary", as_avro(events)),
    ]:
        batch = decode(body, content_type)
        assert batch.errors == [], (content_type, batch.errors[:2])
        assert batch.valid.to_pylist() == expected.to_pylist(), content_type
        assert batch.valid.schema.equals(expected.schema), content_type
        assert batch.valid_rows.to_pylist() == list(range(len(events)))


# ---------------------------------------------------------------- (b) the oracle


def oracle_iso(text: str) -> int | str:
    """Milliseconds, or the error code, for the ISO texts the generators produce."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?", text)
    if m is None:
        return "invalid_timestamp"
    try:
        base = datetime.fromisoformat(m.group(1))
    except ValueError:
        return "invalid_timestamp"
    if m.group(3) is None:
        return "timestamp_no_zone"
    zone = m.group(3)
    minutes = (
        0 if zone == "Z" else (int(zone[1:3]) * 60 + int(zone[4:6])) * (1 if zone[0] == "+" else -1)
    )
    utc = base.replace(tzinfo=UTC) - timedelta(minutes=minutes)
    nanos = int((m.group(2) or "0").ljust(9, "0"))
    return (utc - EPOCH) // timedelta(milliseconds=1) + nanos // 1_000_000


def oracle_value(field: dict[str, Any], v: Any) -> tuple[Any, str | None]:
    """Convert one JSON value the way the spec says, or name the error code."""
    kind = field["type"]
    if kind == "string":
        return (v, None) if isinstance(v, str) else (None, "wrong_type")
    if kind == "bool":
        return (v, None) if isinstance(v, bool) else (None, "wrong_type")
    if kind == "json":
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False), None
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None, "wrong_type"
    if kind == "float":
        return float(v), None
    if kind == "int":
        if isinstance(v, float) and not v.is_integer():
            return None, "wrong_type"
        return (int(v), None) if INT64[0] <= int(v) <= INT64[1] else (None, "wrong_type")
    ms = v if isinstance(v, int) else round(v * 1e3) // 1000  # epoch milliseconds
    return (ms, None) if INT64[0] <= ms <= INT64[1] else (None, "timestamp_out_of_range")


def oracle(row: Any) -> tuple[str | None, str] | dict[str, Any]:
    """The first failure of a row as (field, code), or its converted values if valid."""
    if isinstance(row, Raw):
        return (None, row.code)
    out: dict[str, Any] = {}
    for f in FIELDS:
        name, v = f["name"], row.get(f["name"])
        if name == "ts" and isinstance(v, str):
            parsed = oracle_iso(v)
            v, error = (parsed, None) if isinstance(parsed, int) else (None, parsed)
        elif name == "ts" and v is not None:
            error = "wrong_type"
        else:
            v, error = (None, None) if v is None else oracle_value(f, v)
        if error:
            return (name, error)
        if v is None and name == "ts":
            return (name, "missing_event_time")
        if v is None and f.get("required"):
            return (name, "required")
        problem = v is not None and oracle_constraint(f, v)
        if problem:
            return (name, problem)
        out[name] = v
    if out["epoch"] is not None and out["epoch"] < out["ts"]:
        return (None, "epoch_before_ts")
    return out


def oracle_constraint(f: dict[str, Any], v: Any) -> str | None:
    if "min" in f and v < f["min"]:
        return "below_min"
    if "max" in f and v > f["max"]:
        return "above_max"
    if "enum" in f and v not in f["enum"]:
        return "not_in_enum"
    if "regex" in f and not re.search(f["regex"], v):
        return "regex_mismatch"
    if "max_length" in f and len(v) > f["max_length"]:
        return "too_long"
    if f["type"] == "timestamp" and not MIN_TS <= v <= NOW + FUTURE:
        return "timestamp_out_of_range"
    return None


class Raw:
    """A row given as text that is not a valid object, with the code it must get."""

    def __init__(self, text: str, code: str) -> None:
        self.text, self.code = text, code


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(*INT64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
shallow_json = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
).filter(lambda v: json.dumps(v).count("[") + json.dumps(v).count("{") < MAX_DEPTH)


def mixed(valid: st.SearchStrategy[Any], *invalid: Any) -> st.SearchStrategy[Any]:
    return st.one_of(valid, valid, st.sampled_from(invalid))


@st.composite
def any_ts(draw: st.DrawFn) -> Any:
    kind = draw(
        st.sampled_from(["ok", "ok", "ok", "no_zone", "garbage", "early", "late", "number", "null"])
    )
    if kind in ("ok", "no_zone"):
        text = draw(iso_text(draw(in_range_ms)))
        return text if kind == "ok" else re.sub(r"(Z|[+-]\d\d:\d\d)$", "", text)
    if kind in ("early", "late"):
        ms = (
            MIN_TS - draw(st.integers(1, 10**9))
            if kind == "early"
            else NOW + FUTURE + draw(st.integers(1, 10**9))
        )
        return draw(iso_text(ms))
    return {
        "garbage": draw(
            st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", "", "2026/11/21 10:00Z"])
        ),
        "number": 1_700_000_000,
        "null": None,
    }[kind]


@st.composite
def any_row(draw: st.DrawFn, array: bool) -> Any:
    kind = draw(st.sampled_from(["object"] * 8 + ["malformed", "not_object", "deep"]))
    if kind == "malformed":
        texts = ['{"id": }', '{"id" 1}', "{'id': 'x', 'n': 1}", '{"id": tru}']
        return Raw(
            draw(st.sampled_from(texts + ([] if array else ['{"id": "x",', "{"]))), "malformed_json"
        )
    if kind == "not_object":
        return Raw(
            draw(st.sampled_from(["[1, 2]", '"text"', "5", "null", "true", "[]"])), "not_an_object"
        )
    if kind == "deep":
        depth = draw(st.integers(MAX_DEPTH, MAX_DEPTH + 3))
        return Raw('{"meta": ' + "[" * depth + "]" * depth + "}", "too_deep")
    row = {
        "id": draw(mixed(safe_text | st.just("[[[[[[{{{{"), None, 12, ["x"])),
        "ts": draw(any_ts()),
        "value": draw(
            mixed(
                st.floats(-1000, 1000) | st.integers(-1000, 1000), -1000.5, 1e9, "1.5", True, None
            )
        ),
        "count": draw(mixed(st.integers(0, INT64[1]), -1, 1.5, 2.0, True, 2**63, "3", None)),
        "flag": draw(mixed(st.booleans(), 1, "true", None)),
        "status": draw(mixed(st.sampled_from(["a", "b", "c"]), "zzz", 5, None)),
        "code": draw(mixed(st.from_regex(r"[a-z]{2}[0-9]", fullmatch=True), "ABC", "ab12", None)),
        "note": draw(mixed(st.text(max_size=5), "toolong", None)),
        "epoch": draw(mixed(in_range_ms | st.floats(MIN_TS, NOW), "now", 1e300, 5, None)),
        "meta": draw(mixed(shallow_json, None)),
        "extra": draw(st.none() | shallow_json),
    }
    return {k: v for k, v in row.items() if not (v is None and draw(st.booleans()))}


def row_text(row: Any) -> str:
    return row.text if isinstance(row, Raw) else json.dumps(row)


def check_against_oracle(rows: list[Any], batch: ValidatedBatch) -> None:
    verdicts = [oracle(r) for r in rows]
    expected_errors = [(i, v[0], v[1]) for i, v in enumerate(verdicts) if isinstance(v, tuple)]
    assert [(e.row, e.field, e.code) for e in batch.errors] == expected_errors
    valid = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, dict)]
    assert batch.valid_rows.to_pylist() == [i for i, _ in valid]
    decoded = batch.valid.to_pylist()
    for got, (_, want) in zip(decoded, valid, strict=True):
        for f in FIELDS:
            value = got[f["name"]]
            if f["type"] == "timestamp" and value is not None:
                value = (value - EPOCH) // timedelta(milliseconds=1)
            if f["type"] == "json" and value is not None:
                value = json.dumps(json.loads(value), separators=(",", ":"), ensure_ascii=False)
            want_value = want[f["name"]]
            if isinstance(want_value, float) and math.isnan(want_value):
                continue
            assert value == want_value, (f["name"], value, want_value)
    assert batch.total_rows == len(rows)
    assert all(e.raw for e in batch.errors)


@PROPERTY
@given(
    st.lists(any_row(array=False), min_size=1, max_size=30),
    st.lists(st.integers(0, 30), max_size=4),
)
def test_ndjson_rejections_match_the_oracle(rows: list[Any], blanks: list[int]) -> None:
    lines = [row_text(r) for r in rows]
    for at in sorted(blanks, reverse=True):
        lines.insert(min(at, len(lines)), "  ")  # blank lines are not rows
    check_against_oracle(rows, decode("\n".join(lines).encode(), "application/x-ndjson"))


@PROPERTY
@given(st.lists(any_row(array=True), min_size=1, max_size=30))
def test_json_array_rejections_match_the_oracle(rows: list[Any]) -> None:
    body = "[" + ", ".join(row_text(r) for r in rows) + "]"
    check_against_oracle(rows, decode(body.encode(), "application/json"))


CSV_SCHEMA = schema_from_dict(
    {
        "name": "cells",
        "fields": [
            {"name": "n", "type": "int"},
            {"name": "x", "type": "float"},
            {"name": "ts", "type": "timestamp"},
            {"name": "ms", "type": "timestamp", "unit": "ms"},
        ],
    }
)
int_cells = st.integers(*INT64).map(str) | st.sampled_from(
    ["3.0", "-0", "abc", "1.5", "1e", "--1", "9223372036854775808"]
)
float_cells = st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.sampled_from(
    ["1.5", "-2e3", "x1", "nan", "inf", "1,5"]
)
ms_cells = in_range_ms.map(str) | st.sampled_from(["1700000000123.7", "abc", "1e", "-5"])


NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def oracle_cell(kind: str, text: str) -> Any:
    """A CSV cell's value, or its error code, for the cells the generators produce."""
    if text == "":
        return None
    if kind == "ts":
        return oracle_iso(text)
    number = float(text) if NUMBER.fullmatch(text) else None
    if number is None or not math.isfinite(number):
        return "wrong_type"
    whole = re.fullmatch(r"-?[0-9]+", text)
    if kind == "n":
        value = (
            int(text) if whole else int(number) if number.is_integer() and number < 2**63 else None
        )
        return value if value is not None and INT64[0] <= value <= INT64[1] else "wrong_type"
    if kind == "ms":
        return int(text) if whole else round(number * 1e3) // 1000
    return number


def oracle_csv_row(cells: tuple[str, ...]) -> tuple[str, str] | list[Any]:
    values = []
    for kind, text in zip(["n", "x", "ts", "ms"], cells, strict=True):
        value = oracle_cell(kind, text)
        if isinstance(value, str):
            return (kind, value)
        if kind in ("ts", "ms") and value is not None and not MIN_TS <= value <= NOW + FUTURE:
            return (kind, "timestamp_out_of_range")
        values.append(value)
    return values


@PROPERTY
@given(
    st.lists(
        st.tuples(
            int_cells | st.just(""),
            float_cells | st.just(""),
            st.one_of(any_ts().map(lambda v: v if isinstance(v, str) else "")),
            ms_cells | st.just(""),
        ),
        min_size=1,
        max_size=80,
    )
)
def test_csv_cells_match_the_oracle(rows: list[tuple[str, str, str, str]]) -> None:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["n", "x", "ts", "ms"])
    writer.writerows(rows)
    batch = decode_and_validate(out.getvalue().encode(), "text/csv", None, CSV_SCHEMA, LIMITS, NOW)
    verdicts = [oracle_csv_row(cells) for cells in rows]
    expected_errors = [(i, *v) for i, v in enumerate(verdicts) if isinstance(v, tuple)]
    valid = [v for v in verdicts if isinstance(v, list)]
    assert [(e.row, e.field, e.code) for e in batch.errors] == expected_errors
    got = [
        [
            r["n"],
            r["x"],
            *(
                None if r[k] is None else (r[k] - EPOCH) // timedelta(milliseconds=1)
                for k in ("ts", "ms")
            ),
        ]
        for r in batch.valid.to_pylist()
    ]
    assert got == valid


# ---------------------------------------------------------------- (c) arbitrary bytes

CONTENT_TYPES = ["application/json", "application/x-ndjson", "text/csv", "avro/binary"]
SEEDS = [
    b'[{"id": "a", "ts": "2026-11-21T10:00:00Z", "meta": {"k": [1, 2]}}]',
    b'{"id": "a", "count": 1}\n{"id": "b", "ts": "2026-11-21T10:00:00Z"}\n',
    b'id,ts,count\na,2026-11-21T10:00:00Z,1\n"b,c",,2\n',
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    seed = draw(
        st.sampled_from(
            [
                *SEEDS,
                as_avro(
                    [
                        {
                            "id": "a",
                            "ts": NOW,
                            **dict.fromkeys(
                                (
                                    "value",
                                    "count",
                                    "flag",
                                    "status",
                                    "code",
                                    "note",
                                    "epoch",
                                    "meta",
                                )
                            ),
                        }
                    ]
                ),
            ]
        )
    )
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        if action == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            del data[at:]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.binary(max_size=300) | mutated(),
    st.sampled_from(CONTENT_TYPES),
    st.sampled_from([None, "gzip"]),
)
def test_decoders_raise_only_headwater_errors(
    body: bytes, content_type: str, encoding: str | None
) -> None:
    try:
        batch = decode_and_validate(body, content_type, encoding, SCHEMA, LIMITS, NOW)
    except HeadwaterError as exc:
        assert exc.code and exc.message and 400 <= exc.status < 500
    else:
        assert batch.valid.num_rows + len({e.row for e in batch.errors}) == batch.total_rows
