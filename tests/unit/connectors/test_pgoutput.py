"""The pgoutput decoder on messages built by the protocol's layout, and the CDC config."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.connectors.sources.pgoutput import (
    UNCHANGED,
    Begin,
    Change,
    Column,
    Commit,
    Relation,
    Truncate,
    decode,
    lsn_of,
    lsn_text,
    value_of,
)
from headwater.connectors.sources.postgres_cdc import CdcConfig
from headwater.errors import BadRequest


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def tuple_data(*values: str | object | None) -> bytes:
    out = struct.pack(">h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        else:
            raw = str(v).encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def test_relation_insert_update_delete_truncate() -> None:
    rel = (b"R" + struct.pack(">I", 16385) + cstr("shop") + cstr("items") + b"d"
           + struct.pack(">h", 2) + b"\x01" + cstr("id") + struct.pack(">Ii", 23, -1)
           + b"\x00" + cstr("note") + struct.pack(">Ii", 25, -1))  # fmt: skip
    assert decode(rel) == Relation(16385, "shop", "items",
                                   (Column("id", 23, True), Column("note", 25, False)))  # fmt: skip
    ins = b"I" + struct.pack(">I", 16385) + b"N" + tuple_data("7", "héllo")
    assert decode(ins) == Change("insert", 16385, ("7", "héllo"))
    upd = (b"U" + struct.pack(">I", 16385) + b"K" + tuple_data("6", None) + b"N"
           + tuple_data("7", UNCHANGED))  # fmt: skip
    assert decode(upd) == Change("update", 16385, ("7", UNCHANGED))
    dele = b"D" + struct.pack(">I", 16385) + b"K" + tuple_data("7", None)
    assert decode(dele) == Change("delete", 16385, ("7", None))
    trunc = b"T" + struct.pack(">IB", 2, 0) + struct.pack(">II", 16385, 16390)
    assert decode(trunc) == Truncate((16385, 16390))
    assert decode(b"Y" + bytes(10)) is None  # a type message: not needed


def test_begin_and_commit() -> None:
    commit_us = 1_000_000  # 2000-01-01T00:00:01Z in the PostgreSQL epoch
    c = b"C\x00" + struct.pack(">QQq", 0x10, 0x20, commit_us)
    assert decode(c) == Commit(0x10, 0x20, 946_684_801_000)
    b = b"B" + struct.pack(">Qq", 0x20, commit_us) + struct.pack(">I", 9)
    assert decode(b) == Begin(0x20, 9)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_lsn_text_round_trips(lsn: int) -> None:
    assert lsn_of(lsn_text(lsn)) == lsn


def test_values_by_type() -> None:
    assert value_of("f", 16) is False and value_of("true", 16) is True
    assert value_of("-12", 20) == -12 and value_of("NaN", 1700) != value_of("NaN", 1700)
    assert value_of("2026-01-02 03:04:05.5", 1114) == datetime(2026, 1, 2, 3, 4, 5, 500000, UTC)
    assert value_of("2026-01-02", 1082) == "2026-01-02"  # a date: its ISO text
    assert value_of('[1, {"a": null}]', 114) == [1, {"a": None}]
    assert value_of("abc", 23) == "abc"  # not an integer: left for validation to refuse
    assert value_of(None, 23) is None and value_of(UNCHANGED, 25) is None
    assert value_of("(1,2)", 600) == "(1,2)"  # a point: its text


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({"tables": ["t"]}, "config.dsn"),
        ({"dsn": "=bad", "tables": ["t"]}, "config.dsn"),
        ({"dsn": "host=x"}, "config.tables"),
        ({"dsn": "host=x", "tables": ["t; drop"]}, "config.tables"),
        ({"dsn": "host=x", "tables": ["t"], "slot": "Bad-Name"}, "config.slot"),
        ({"dsn": "host=x", "tables": ["t"], "batch_rows": 0}, "config.batch_rows"),
        ({"dsn": "host=x", "tables": ["t"], "poll_ms": 1}, "config.poll_ms"),
    ],
)
def test_a_bad_config_says_what_to_fix(config: dict[str, object], says: str) -> None:
    with pytest.raises(BadRequest) as err:
        CdcConfig.parse(config)
    assert says in err.value.message


def test_tables_default_to_public() -> None:
    cfg = CdcConfig.parse({"dsn": "host=x", "tables": ["a", "s.b"]})
    assert cfg.tables == (("public", "a"), ("s", "b")) and cfg.snapshot
