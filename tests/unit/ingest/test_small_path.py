"""The small-body path gives exactly the vectorised path's answer, checked with Hypothesis.

Bodies of a few JSON rows are decoded and checked in plain Python (``ingest.small``);
every row, error code, message and raw text must match ``decode_vectorized`` on the
same body, and the result must also match the per-row oracle of
``test_ingest_properties``. The generators there produce rows of every kind; the ones
here produce well-typed rows that break constraints, which the small path answers
itself rather than handing over.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from test_ingest_properties import (
    FUTURE,
    INT64,
    LIMITS,
    MIN_TS,
    NOW,
    PROPERTY,
    SCHEMA,
    Raw,
    any_row,
    any_ts,
    as_json_array,
    as_ndjson,
    check_against_oracle,
    in_range_ms,
    iso_text,
    row_text,
    safe_text,
    shallow_json,
    valid_event,
)

from headwater.errors import HeadwaterError
from headwater.ingest.batch import decode_vectorized
from headwater.ingest.cells import iso_to_ms
from headwater.ingest.model import ValidatedBatch
from headwater.ingest.small import SMALL_ROWS, Unsure, decode_small, iso_ms
from headwater.model.schema import StreamSchema, schema_from_dict

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Units, a filled event time, a fractional int bound, and a rule only DuckDB evaluates.
OTHER_SCHEMA = schema_from_dict(
    {
        "name": "other",
        "fields": [
            {"name": "at", "type": "timestamp", "unit": "s"},
            {"name": "us", "type": "timestamp", "unit": "us"},
            {"name": "n", "type": "int", "min": -1.5, "max": 10.5},
            {"name": "word", "type": "string", "regex": "[0-9]$", "max_length": 6},
        ],
        "event_time": "at",
        "allow_missing_event_time": True,
        "rules": [{"expr": "length(word) < 5", "code": "short", "message": "keep it short"}],
    }
)


def both(body: bytes, fmt: str, schema: StreamSchema) -> tuple[Any, Any]:
    """The small path's and the vectorised path's outcome: a batch, None, or the error."""
    outcomes = []
    for run in (decode_small, decode_vectorized):
        try:
            outcomes.append(run(body, fmt, schema, LIMITS, NOW))  # type: ignore[arg-type]
        except HeadwaterError as exc:
            outcomes.append((type(exc), exc.code, exc.message))
    return outcomes[0], outcomes[1]


def assert_same(small: ValidatedBatch, vectorized: ValidatedBatch) -> None:
    assert small.valid.schema.equals(vectorized.valid.schema)
    assert small.valid.to_pylist() == vectorized.valid.to_pylist()
    assert small.valid_rows.to_pylist() == vectorized.valid_rows.to_pylist()
    assert small.errors == vectorized.errors
    assert small.total_rows == vectorized.total_rows


def agree(body: bytes, fmt: str, schema: StreamSchema = SCHEMA) -> ValidatedBatch | None:
    """Assert both paths agree on ``body``; return the small path's batch if it took it."""
    small, vectorized = both(body, fmt, schema)
    if small is None:
        return None
    if isinstance(small, tuple) or isinstance(vectorized, tuple):
        assert small == vectorized
        return None
    assert_same(small, vectorized)
    return small


def agree_counted(body: bytes, fmt: str, schema: StreamSchema = SCHEMA) -> ValidatedBatch | None:
    """``agree``, counting in Hypothesis' statistics how often the small path answered."""
    batch = agree(body, fmt, schema)
    if batch is None:
        event(f"{fmt}: handed over or refused")
    else:
        event(f"{fmt}: answered, {'with' if batch.errors else 'no'} errors")
    return batch


# ---------------------------------------------------------------- generators


@st.composite
def typed_row(draw: st.DrawFn) -> dict[str, Any]:
    """A row of well-typed values, any of which may break its field's constraints."""
    row = {
        "id": draw(safe_text),
        "ts": draw(any_ts().filter(lambda v: isinstance(v, str))),
        "value": draw(st.floats(-2000, 2000) | st.integers(-2000, 2000)),
        "count": draw(st.integers(-5, INT64[1])),
        "flag": draw(st.booleans()),
        "status": draw(st.sampled_from(["a", "b", "c", "zzz", "A"])),
        "code": draw(
            st.from_regex(r"[a-z]{2}[0-9]", fullmatch=True)
            | st.sampled_from(["ABC", "ab12", "xy٣", "ab1 "])
        ),
        "note": draw(st.text(max_size=8)),
        "epoch": draw(
            in_range_ms | st.integers(MIN_TS - 10**6, NOW + FUTURE + 10**6) | st.integers(*INT64)
        ),
        "meta": draw(shallow_json),
    }
    # Drop some fields: missing required values and missing event times.
    return {k: v for k, v in row.items() if draw(st.integers(0, 5)) > 0}


@st.composite
def other_row(draw: st.DrawFn) -> dict[str, Any]:
    row = {
        "at": draw(
            st.floats(-1e12, 1e12, allow_nan=False)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.integers(-(10**15), 10**15)
        ),
        "us": draw(st.integers(*INT64) | st.integers(-(2**70), 2**70)),
        "n": draw(st.integers(-3, 12) | st.integers(-(2**64), 2**64)),
        "word": draw(st.text(max_size=8) | st.sampled_from(["ab1", "abc1\n", "٣", "abcdef1"])),
    }
    return {k: v for k, v in row.items() if draw(st.integers(0, 4)) > 0}


def ndjson(rows: list[Any]) -> bytes:
    return "\n".join(row_text(r) for r in rows).encode()


def json_array(rows: list[Any]) -> bytes:
    return ("[" + ", ".join(row_text(r) for r in rows) + "]").encode()


# ---------------------------------------------------------------- properties


@PROPERTY
@given(st.lists(typed_row(), min_size=1, max_size=SMALL_ROWS))
def test_small_path_agrees_on_constraint_failures(rows: list[dict[str, Any]]) -> None:
    for fmt, body in [("ndjson", ndjson(rows)), ("json", json_array(rows))]:
        check_against_oracle(
            rows, agree_counted(body, fmt) or decode_vectorized(body, fmt, SCHEMA, LIMITS, NOW)
        )
    agree_counted(json.dumps(rows[0]).encode(), "json")


@PROPERTY
@given(st.lists(any_row(array=False), min_size=1, max_size=SMALL_ROWS))
def test_small_path_agrees_on_any_ndjson_rows(rows: list[Any]) -> None:
    batch = agree_counted(ndjson(rows), "ndjson")
    if batch is not None:
        check_against_oracle(rows, batch)


@PROPERTY
@given(st.lists(any_row(array=True), min_size=1, max_size=SMALL_ROWS))
def test_small_path_agrees_on_any_json_rows(rows: list[Any]) -> None:
    batch = agree_counted(json_array(rows), "json")
    if batch is not None:
        check_against_oracle(rows, batch)
    if not isinstance(rows[0], Raw):
        agree_counted(row_text(rows[0]).encode(), "json")


@PROPERTY
@given(st.lists(other_row(), min_size=1, max_size=SMALL_ROWS))
def test_small_path_agrees_on_epoch_units_filled_time_and_duckdb_rules(
    rows: list[dict[str, Any]],
) -> None:
    agree_counted(ndjson(rows), "ndjson", OTHER_SCHEMA)
    agree_counted(json_array(rows), "json", OTHER_SCHEMA)


@PROPERTY
@given(st.lists(valid_event(), min_size=1, max_size=SMALL_ROWS))
def test_small_path_answers_valid_events_itself(events: list[dict[str, Any]]) -> None:
    for fmt, body in [("ndjson", as_ndjson(events)), ("json", as_json_array(events))]:
        batch = agree_counted(body, fmt)
        assert batch is not None, "valid plain rows must not be handed over"
        assert batch.errors == [] and batch.valid.num_rows == len(events)


@st.composite
def timestamp_text(draw: st.DrawFn) -> str:
    """ISO-like text around the plain form: valid, out of range, or slightly off."""
    year = draw(st.integers(0, 9999) | st.sampled_from([1677, 1678, 1700, 2200, 2261, 2262]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = (
        draw(st.integers(0, 24)),
        draw(st.integers(0, 60)),
        draw(st.integers(0, 60)),
    )
    text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
    digits = draw(st.integers(0, 10))
    if digits:
        text += "." + "".join(
            draw(st.lists(st.sampled_from("0123456789"), min_size=digits, max_size=digits))
        )
    zone = draw(
        st.sampled_from(["Z", "z", "", "+00:00", "+0530", "+05"])
        | st.builds(
            lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
            st.sampled_from("+-"),
            st.integers(0, 25),
            st.integers(0, 61),
        )
    )
    return text + zone


@PROPERTY
@given(
    st.lists(
        timestamp_text() | st.integers(-(10**13), 10**13).flatmap(iso_text), min_size=1, max_size=20
    )
)
def test_iso_fast_parse_equals_arrow(texts: list[str]) -> None:
    column, errors = iso_to_ms(pa.array(texts, pa.string()))
    failed = {e.pos for e in errors}
    for pos, text in enumerate(texts):
        try:
            ms = iso_ms(text)
        except Unsure:
            event("handed over")
            continue
        event("parsed")
        assert pos not in failed, text
        assert column[pos].cast(pa.int64()).as_py() == ms, text


# ---------------------------------------------------------------- examples


def test_constraint_failures_are_answered_by_the_small_path() -> None:
    rows = [
        {"id": "a", "ts": "2026-11-21T10:00:00Z", "value": 5000.0},
        {"ts": "2026-11-21T10:00:00Z"},
        {"id": "c", "status": "zzz", "ts": "2026-11-21T10:00:00.5+01:00"},
        {"id": "d", "ts": "1990-01-01T00:00:00Z"},
        {"id": "e", "ts": "2026-11-21T10:00:00Z", "epoch": 1_795_255_199_000},
        {"id": "f", "ts": "2026-11-21T10:00:00Z", "code": "ab1\n"},
    ]
    batch = agree(ndjson(rows), "ndjson")
    assert batch is not None
    assert [(e.row, e.field, e.code) for e in batch.errors] == [
        (0, "value", "above_max"),
        (1, "id", "required"),
        (2, "status", "not_in_enum"),
        (3, "ts", "timestamp_out_of_range"),
        (4, None, "epoch_before_ts"),
        (5, "code", "regex_mismatch"),
    ]
    assert batch.errors[0].message == "value is 5000.0, above the maximum 1000"
    assert batch.errors[0].raw == json.dumps(rows[0])


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "a", "ts": "2026-11-21T10:00:00"}',  # no offset: Arrow's parser decides
        b'{"id": "a", "ts": "2026-11-21 10:00:00Z"}',  # not the plain form
        b'{"id": 5, "ts": "2026-11-21T10:00:00Z"}',  # a wrong type
        b'{"id": "a"} {"id": "b"}',  # two objects on a line
        b'{"id": "a", "count": 9223372036854775808}',  # beyond int64
        b'{"id": "a", "meta": [[[[[1]]]]]}',  # maybe too deep
        b"[]",
        b"   ",
    ],
)
def test_what_the_small_path_hands_over(body: bytes) -> None:
    for fmt in ("ndjson", "json"):
        small, vectorized = both(body, fmt, SCHEMA)
        if isinstance(vectorized, tuple):
            assert small == vectorized or small is None
        else:
            assert small is None


def test_a_body_over_the_row_limit_is_handed_over() -> None:
    rows = [{"id": str(i), "ts": "2026-11-21T10:00:00Z"} for i in range(SMALL_ROWS + 1)]
    assert decode_small(ndjson(rows), "ndjson", SCHEMA, LIMITS, NOW) is None
    assert decode_small(json_array(rows), "json", SCHEMA, LIMITS, NOW) is None


def test_epoch_seconds_round_like_the_vectorised_path() -> None:
    rows = [{"at": 1_700_000_000.25}, {"at": 1_700_000_000.0015}, {"at": 1_000_000_000.0000005}, {}]
    batch = agree(ndjson(rows), "ndjson", OTHER_SCHEMA)
    assert batch is not None
    got = [(v - EPOCH) // timedelta(milliseconds=1) for v in batch.valid.column("at").to_pylist()]
    assert got[0] == 1_700_000_000_250 and got[3] == NOW  # a missing event time is filled
