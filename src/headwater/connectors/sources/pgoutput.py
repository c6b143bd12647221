"""A decoder of PostgreSQL's ``pgoutput`` logical replication messages (protocol 1), and
the text values they carry turned into Python values (the source sends them on as NDJSON, so they take the
same decoding and validation as an HTTP body).

Only what a change feed needs: ``Begin``, ``Commit``, ``Relation``, ``Insert``,
``Update``, ``Delete`` and ``Truncate``; other messages (``Type``, ``Origin``, logical
messages) are skipped. Values come in PostgreSQL's text output (with ``DateStyle=ISO``
and ``TimeZone=UTC``, which the source sets on its sessions); ``value_of`` converts booleans,
integers, floating and numeric, timestamps and JSON; anything else stays text (as
``to_json`` gives it in the snapshot, for most types).

>>> begin = b"B" + (0x1947CE0).to_bytes(8, "big") + bytes(8) + (727).to_bytes(4, "big")
>>> decode(begin)
Begin(final_lsn=26508512, xid=727)
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

UNCHANGED = object()  # an unchanged TOASTed value an update did not send


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    commit_lsn: int
    end_lsn: int
    commit_ms: int


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_oid: int
    key: bool


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    columns: tuple[Column, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """An insert, update or delete of one row; ``values`` in the relation's column order
    (None for NULL, ``UNCHANGED`` for an unchanged TOASTed value, text otherwise)."""

    op: str  # insert | update | delete
    relation: int
    values: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Truncate:
    relations: tuple[int, ...]


Message = Begin | Commit | Relation | Change | Truncate | None
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds


class _Buf:
    __slots__ = ("at", "data")

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 1

    def int(self, size: int) -> int:
        v = int.from_bytes(self.data[self.at : self.at + size], "big", signed=size == 8)
        self.at += size
        return v

    def str(self) -> str:
        end = self.data.index(0, self.at)
        s = self.data[self.at : end].decode()
        self.at = end + 1
        return s

    def tuple(self) -> tuple[object, ...]:
        data, at = self.data, self.at
        n = _I16.unpack_from(data, at)[0]
        at += 2
        out: list[object] = []
        for _ in range(n):
            kind = data[at]
            at += 1
            if kind == 110:  # n: NULL
                out.append(None)
            elif kind == 117:  # u: an unchanged TOASTed value
                out.append(UNCHANGED)
            else:  # t: text (b, binary, is not asked for)
                size = _I32.unpack_from(data, at)[0]
                at += 4
                out.append(data[at : at + size].decode())
                at += size
        self.at = at
        return tuple(out)


_I16, _I32 = struct.Struct(">h"), struct.Struct(">i")


def decode(data: bytes) -> Message:
    """One ``pgoutput`` message; None for kinds a change feed does not need."""
    b = _Buf(data)
    kind = data[:1]
    if kind == b"B":
        lsn = b.int(8)
        b.int(8)  # commit time, also in Commit
        return Begin(lsn, b.int(4))
    if kind == b"C":
        b.int(1)  # flags
        commit_lsn, end_lsn = b.int(8), b.int(8)
        return Commit(commit_lsn, end_lsn, (b.int(8) + PG_EPOCH_US) // 1000)
    if kind == b"R":
        oid, schema, name = b.int(4), b.str(), b.str()
        b.int(1)  # replica identity setting
        cols = []
        for _ in range(b.int(2)):
            flags = b.int(1)
            col, type_oid = b.str(), b.int(4)
            b.int(4)  # type modifier
            cols.append(Column(col, type_oid, bool(flags & 1)))
        return Relation(oid, schema, name, tuple(cols))
    if kind == b"I":
        rel = b.int(4)
        b.at += 1  # 'N'
        return Change("insert", rel, b.tuple())
    if kind == b"U":
        rel = b.int(4)
        if data[b.at : b.at + 1] in (b"K", b"O"):  # the old key or row: the new one follows
            b.at += 1
            b.tuple()
        b.at += 1  # 'N'
        return Change("update", rel, b.tuple())
    if kind == b"D":
        rel = b.int(4)
        b.at += 1  # 'K' (key columns) or 'O' (the whole old row)
        return Change("delete", rel, b.tuple())
    if kind == b"T":
        n = b.int(4)
        b.int(1)  # options
        return Truncate(tuple(b.int(4) for _ in range(n)))
    return None


def lsn_of(text: str) -> int:
    """``'0/1947CE0'`` → 26508512."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_text(lsn: int) -> str:
    """26508512 → ``'0/1947CE0'``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def _bool(s: str) -> bool:
    return s in ("t", "true")


def _timestamp(s: str) -> datetime:
    """``2026-12-06 05:15:12.341264+00`` (or without offset: UTC)."""
    if s in ("infinity", "-infinity"):
        return datetime.max.replace(tzinfo=UTC) if s[0] == "i" else datetime.min.replace(tzinfo=UTC)
    d = datetime.fromisoformat(s)
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


# type OID → converter of the text form (anything else stays text)
CONVERTERS: dict[int, Callable[[str], object]] = {
    16: _bool, 20: int, 21: int, 23: int, 26: int, 700: float, 701: float, 1700: float,
    1114: _timestamp, 1184: _timestamp, 114: orjson.loads, 3802: orjson.loads,
}  # fmt: skip


def value_of(text: object, type_oid: int) -> object:
    """A column's text as the Python value of its type (None and ``UNCHANGED`` stay).

    >>> value_of("t", 16), value_of("42", 23), value_of("1.5", 1700), value_of("x", 25)
    (True, 42, 1.5, 'x')
    >>> value_of('{"a": [1]}', 3802), value_of("2026-01-02 03:04:05+00", 1184).isoformat()
    ({'a': [1]}, '2026-01-02T03:04:05+00:00')
    """
    if text is None or text is UNCHANGED or not isinstance(text, str):
        return None if text is UNCHANGED else text
    conv = CONVERTERS.get(type_oid)
    if conv is None:
        return text
    try:
        return conv(text)
    except ValueError:  # e.g. NaN in a numeric: the text, for validation to judge
        return text
