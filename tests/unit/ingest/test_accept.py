"""``accept``: source chunks take the HTTP path, and their position rides in the same entry."""

from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from headwater.connectors.sources.positions import PositionFile, recover
from headwater.errors import Overloaded
from headwater.ingest.accept import Acceptor, Origin, commit_of
from headwater.ingest.answers import answer_topics
from headwater.ingest.streams import StreamState
from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock
from headwater.runtime import Runtime, build_runtime
from headwater.settings import Settings

SCHEMA = schema_from_dict({
    "name": "s", "id": "eid",
    "fields": [{"name": "x", "type": "int", "min": 0}, {"name": "eid", "type": "string"}],
})  # fmt: skip


async def started(tmp_path: Path) -> Runtime:
    rt = build_runtime(Settings(data_dir=tmp_path, bootstrap_key="k"), ManualClock(10**12))
    await rt.start()
    return rt


def acceptor(p: Runtime, lag: int = 0) -> Acceptor:
    return Acceptor(p.ingest, p.log, p.clock, p.ingest_limits, lambda st: lag, 100)


def lines(*xs: int) -> bytes:
    return b"".join(orjson.dumps({"x": x, "eid": f"e{x}"}) + b"\n" for x in xs)


async def test_rows_quarantine_and_position_are_durable_together(tmp_path: Path) -> None:
    p = await started(tmp_path)
    try:
        st: StreamState = p.streams.create("default", SCHEMA, 0, set())
        a = acceptor(p)
        r = await a.accept(st, lines(1, 2, -5), "ndjson", Origin("src", "p0", "30"), 1)
        assert (r.accepted, r.rejected, r.duplicates) == (2, 1, 0)
        assert r.errors[0].code == "below_min" and r.topic == st.topic
        [entry] = p.log.read(st.topic, 0)
        assert commit_of(entry.meta) == commit_of(entry.meta) is not None
        assert commit_of(entry.meta).position == "30"  # type: ignore[union-attr]
        [q] = p.log.read(st.quarantine_topic, 0)
        assert q.batch.column("request_id").to_pylist() == ["source:src:p0@30"]
        # all duplicates: no row to store, the position still moves (a marker entry)
        again = await a.accept(st, lines(1, 2), "ndjson", Origin("src", "p0", "40"), 2)
        assert (again.accepted, again.duplicates, again.topic) == (0, 2, st.idempotency_topic)
        file = PositionFile(tmp_path / "sources.sqlite")
        file.save("default", "src", "p0", "30", 1, st.topic, r.end_offset)
        found = recover(p.log, file, "default", "src", 0, answer_topics(st))
        assert found.positions == {"p0": ("40", 2)}  # the log's newer commit beats the file's
        assert found.unsaved == {"p0": ("40", 2)}  # only the log held it
        assert recover(p.log, file, "default", "other", 0, answer_topics(st)).positions == {}
        old_epoch = recover(p.log, file, "default", "src", 7, answer_topics(st))
        assert old_epoch.positions == {"p0": ("30", 1)}
        p.housekeeping.run()  # copying idempotency answers skips the source commits
    finally:
        await p.stop()


async def test_arrow_chunks_are_cast_or_checked_value_by_value(tmp_path: Path) -> None:
    p = await started(tmp_path)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        table = pa.table({"x": pa.array([1, 2, 3], pa.int32()), "eid": ["a", "b", "c"]})
        r = await acceptor(p).accept(st, table, "arrow", Origin("f", "p", "1"), 1)
        assert (r.accepted, r.rejected) == (3, 0)
        mixed = pa.table({"x": ["4", "nope"], "eid": ["d", "e"]})
        r = await acceptor(p).accept(st, mixed, "arrow", Origin("f", "p", "2"), 2)
        assert (r.accepted, r.rejected, r.errors[0].code) == (0, 2, "wrong_type")
    finally:
        await p.stop()


async def test_pushback_refuses_before_writing_anything(tmp_path: Path) -> None:
    p = await started(tmp_path)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        with pytest.raises(Overloaded):
            await acceptor(p, lag=101).accept(st, lines(1), "ndjson", Origin("s", "p", "1"), 1)
        assert p.log.end_offset(st.topic) == 0
    finally:
        await p.stop()


async def test_rejected_rows_keep_a_text_the_quarantine_replay_can_read(tmp_path: Path) -> None:
    p = await started(tmp_path)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        a = acceptor(p)
        await a.accept(st, b"x,eid\n1,a\n-1,b\n", "csv", Origin("s", "p", "1"), 1)
        table = pa.table({"x": pa.array([-2], pa.int64()), "eid": ["c"]})
        await a.accept(st, table, "arrow", Origin("s", "p", "2"), 2)
        rows = [e.batch.to_pylist()[0] for e in p.log.read(st.quarantine_topic, 0)]
        assert [(r["format"], r["raw"]) for r in rows] == [
            ("csv", "x,eid\n-1,b"),
            ("json", '{"x":-2,"eid":"c"}'),
        ]
    finally:
        await p.stop()


async def test_a_chunk_that_cannot_be_decoded_is_one_quarantined_row(tmp_path: Path) -> None:
    p = await started(tmp_path)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        r = await acceptor(p).accept(st, b"\xff\xfe\n", "ndjson", Origin("s", "p", "9"), 1)
        assert (r.accepted, r.rejected, r.topic) == (0, 1, st.quarantine_topic)
        [entry] = p.log.read(st.quarantine_topic, 0)
        assert commit_of(entry.meta).position == "9"  # type: ignore[union-attr]
        assert "whole chunk" in entry.batch.column("message")[0].as_py()
    finally:
        await p.stop()
