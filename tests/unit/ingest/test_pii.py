"""Personal data fields are transformed at ingest, in stored rows and in quarantined text."""

from __future__ import annotations

import csv

import orjson
import pytest

from headwater.errors import InvalidSchema
from headwater.ingest.batch import DecodeLimits, decode_and_validate
from headwater.model.schema import check_schema, schema_from_dict

KEY = b"k" * 32
LIMITS = DecodeLimits(
    max_body_bytes=1 << 20, max_rows=1000, max_depth=32, min_ts_ms=0,
    max_future_ms=86_400_000, max_errors=100, pii_key=KEY,
)  # fmt: skip
SCHEMA = schema_from_dict(
    {
        "name": "signups",
        "fields": [
            {"name": "user", "type": "string", "required": True},
            {"name": "email", "type": "string", "pii": "hash", "regex": "^[^@]+@[^@]+$"},
            {"name": "card", "type": "string", "pii": "mask"},
            {"name": "phone", "type": "string", "pii": "drop"},
            {"name": "age", "type": "int", "min": 0, "max": 150},
        ],
        "subject": "user",
    }
)


def ingest(rows: list[dict], fmt: str = "application/x-ndjson"):  # type: ignore[no-untyped-def]
    body = b"\n".join(orjson.dumps(r) for r in rows)
    return decode_and_validate(body, fmt, None, SCHEMA, LIMITS, 1_795_255_300_000)


@pytest.mark.parametrize("n", [1, 300])  # the plain-Python path and the vectorized one
def test_stored_rows_never_hold_the_values(n: int) -> None:
    row = {"user": "u1", "email": "ann@example.com", "card": "4111111111111111",
           "phone": "+44 20 7946 0958", "age": 30}  # fmt: skip
    out = ingest([row] * n)
    assert out.accepted == n
    stored = out.valid.to_pylist()[0]
    assert stored["user"] == "u1" and stored["age"] == 30
    assert stored["card"] == "************1111" and stored["phone"] is None
    assert stored["email"].startswith("sha256:") and "ann" not in stored["email"]
    again = ingest([{**row, "card": None}])
    assert again.valid.column("email")[0].as_py() == stored["email"]  # equal values group
    other_key = decode_and_validate(
        orjson.dumps(row), "application/json", None, SCHEMA,
        DecodeLimits(**{**LIMITS.__dict__, "pii_key": b"x" * 32}), 1_795_255_300_000,
    )  # fmt: skip
    assert other_key.valid.column("email")[0].as_py() != stored["email"]


def test_constraints_check_the_real_value_and_quarantine_gets_the_transformed_text() -> None:
    bad_email = {"user": "u2", "email": "not-an-email", "card": "5500000000000004", "phone": "1"}
    bad_age = {"user": "u3", "email": "bob@example.com", "card": "1234", "age": 999}
    out = ingest([bad_email, bad_age])
    assert [e.code for e in out.errors] == ["regex_mismatch", "above_max"]
    first, second = (orjson.loads(e.raw) for e in out.errors)
    assert first["email"].startswith("sha256:") and first["phone"] is None
    assert first["card"] == "************0004" and first["user"] == "u2"
    assert second["card"] == "****" and "bob" not in second["email"]
    assert all("example.com" not in e.raw and "not-an-email" not in e.raw for e in out.errors)


def test_hashing_a_hashed_value_leaves_it_so_replays_keep_it() -> None:
    plain = schema_from_dict(
        {"name": "s", "fields": [{"name": "email", "type": "string", "pii": "hash"}]}
    )

    def email(value: str) -> str:
        body = orjson.dumps({"email": value})
        out = decode_and_validate(body, "application/json", None, plain, LIMITS, 0)
        return str(out.valid.column("email")[0].as_py())

    once = email("c@d.e")
    assert email(once) == once
    assert email("sha256:" + "0" * 63) != "sha256:" + "0" * 63  # not a hash: hashed


def test_rejected_csv_lines_are_scrubbed_cell_by_cell() -> None:
    body = b'card,user,phone,email,age\n4111111111111111,"u,4",555,x@y.z,-3\n'
    out = decode_and_validate(body, "text/csv", None, SCHEMA, LIMITS, 1_795_255_300_000)
    assert [e.code for e in out.errors] == ["below_min"]
    card, user, phone, email, age = next(csv.reader([out.errors[0].raw]))
    assert (card, user, phone, age) == ("************1111", "u,4", "", "-3")
    assert email.startswith("sha256:")


@pytest.mark.parametrize(
    ("fields", "extra", "words"),
    [
        ([{"name": "n", "type": "int", "pii": "mask"}], {}, "applies to string fields"),
        ([{"name": "k", "type": "string", "pii": "drop"}], {"key": ["k"]}, "key"),
        ([{"name": "k", "type": "string", "pii": "mask"}], {"subject": "k"}, "subject"),
        ([{"name": "k", "type": "string"}], {"subject": "nope"}, "not a field"),
    ],
)
def test_schemas_that_cannot_work_are_refused(fields: list, extra: dict, words: str) -> None:
    with pytest.raises(InvalidSchema, match=words):
        check_schema(schema_from_dict({"name": "s", "fields": fields, **extra}))


def test_a_key_field_may_be_hashed() -> None:
    check_schema(
        schema_from_dict(
            {"name": "s", "fields": [{"name": "k", "type": "string", "pii": "hash"}], "key": ["k"]}
        )
    )
