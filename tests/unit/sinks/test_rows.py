"""Columnar rows and requests against a row-by-row oracle: every row's JSON, key and
offset, and every request's rows, body and key, for random entries, masks and limits."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.log.ports import LogEntry
from headwater.sinks.rows import Encoder, Row, encode_rows, requests_of

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=8)
STAMPS = st.datetimes(datetime(1, 1, 1), datetime(9999, 12, 31), timezones=st.just(UTC))


@st.composite
def entries(draw: st.DrawFn) -> list[LogEntry]:
    out, offset = [], draw(st.integers(0, 40))
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(1, 12))
        batch = pa.record_batch({
            "name": pa.array(draw(st.lists(st.none() | TEXT, min_size=n, max_size=n))),
            "v": pa.array(draw(st.lists(st.none() | st.floats(width=64), min_size=n,
                                        max_size=n)), pa.float64()),
            "n": pa.array(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=n,
                                        max_size=n)), pa.int64()),
            "ts": pa.array(draw(st.lists(st.none() | STAMPS, min_size=n, max_size=n)),
                           pa.timestamp("ms", tz="UTC")),
            "_hidden": pa.array([1] * n),
        })  # fmt: skip
        out.append(LogEntry("t.s", offset, batch))
        offset += n + draw(st.integers(0, 3))  # erased rows leave gaps in the offsets
    return out


def oracle_rows(sink: str, found: list[LogEntry], by_offset: bool, keep: list[bool]) -> list[Row]:
    """Row by row: one DuckDB query per row, timestamps by ``strftime``."""
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")
    out, at = [], 0
    for e in found:
        for i in range(e.batch.num_rows):
            at += 1
            if not keep[at - 1]:
                continue
            one = e.batch.slice(i, 1)
            ts = pc.strftime(one.column("ts"), "%Y-%m-%dT%H:%M:%SZ")
            v = one.column("v").to_pylist()[0]
            finite = pa.array([v if v is not None and math.isfinite(v) else None], pa.float64())
            row = pa.table({"name": one.column("name"), "v": finite,  # noqa: F841
                            "n": one.column("n"), "ts": ts})  # fmt: skip
            text = db.sql("SELECT to_json(row)::VARCHAR FROM row").fetchall()[0][0].encode()
            offset = e.offset + i
            key = (
                f"{sink}-{offset}"
                if by_offset
                else f"{sink}-{hashlib.sha256(text).hexdigest()[:32]}"
            )
            out.append(Row(offset, key, text))
    return out


def oracle_requests(
    sink: str, rows: list[Row], batch_rows: int, batch_bytes: int, aligned: bool
) -> list[tuple[list[Row], bytes, str]]:
    """The cut, one row at a time."""
    out, cur, size = [], [], 0

    def close(cur: list[Row]) -> tuple[list[Row], bytes, str]:
        if batch_rows == 1 and len(cur) == 1:
            return cur, cur[0].json, cur[0].key
        body = b"[" + b",".join(r.json for r in cur) + b"]"
        if len(cur) == 1:
            return cur, body, cur[0].key
        digest = hashlib.sha256("\n".join(r.key for r in cur).encode()).hexdigest()[:32]
        return cur, body, f"{sink}-batch-{digest}"

    for r in rows:
        boundary = aligned and batch_rows > 1 and r.offset % batch_rows == 0
        if cur and (len(cur) >= batch_rows or size + len(r.json) > batch_bytes or boundary):
            out.append(close(cur))
            cur, size = [], 0
        cur.append(r)
        size += len(r.json) + 1
    if cur:
        out.append(close(cur))
    return out


@settings(max_examples=examples(60), deadline=None)
@given(entries(), st.booleans(), st.integers(1, 7), st.integers(1, 400), st.data())
def test_columnar_rows_and_requests_equal_the_row_by_row_oracle(
    found: list[LogEntry], by_offset: bool, batch_rows: int, batch_bytes: int, data: st.DataObject
) -> None:
    total = sum(e.batch.num_rows for e in found)
    keep = data.draw(st.lists(st.booleans(), min_size=total, max_size=total))
    enc = Encoder()
    try:
        rows = enc.rows("s", found, by_offset, pa.array(keep))
    finally:
        enc.close()
    expected = oracle_rows("s", found, by_offset, keep)
    assert list(rows) == expected
    for r in rows:
        assert orjson.loads(r.json)  # every row is a JSON object
    got = requests_of("s", rows, batch_rows, batch_bytes, by_offset)
    want = oracle_requests("s", expected, batch_rows, batch_bytes, by_offset)
    assert [(list(q.rows), q.body, q.key) for q in got] == want


def test_entries_of_one_row_each_are_one_query_and_keep_their_offsets() -> None:
    found = [LogEntry("t.s", 100 + 2 * i, pa.record_batch({"v": [i]})) for i in range(500)]
    rows = encode_rows("s", found, by_offset=True)
    assert [(r.offset, r.key, r.json) for r in rows][:2] == [
        (100, "s-100", b'{"v":0}'), (102, "s-102", b'{"v":1}')]  # fmt: skip
    assert rows.offsets.tolist() == [100 + 2 * i for i in range(500)]
    reqs = requests_of("s", rows, 1, 1000, True)
    assert [q.body for q in reqs][-1] == b'{"v":499}' and reqs[-1].key == "s-1098"
