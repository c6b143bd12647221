"""Quarantine replay in process: states, in-place updates, and a crash before the store commit."""

from pathlib import Path
from typing import Any

import orjson

from headwater.ingest.replay import Selection
from headwater.ingest.streams import StreamState
from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock
from headwater.runtime import Runtime, build_runtime
from headwater.settings import Settings

FIELDS = [{"name": "x", "type": "int", "max": 10}, {"name": "id", "type": "string"}]
SCHEMA = schema_from_dict({"name": "s", "fields": FIELDS, "id": "id"})
FIXED = schema_from_dict(
    {"name": "s", "fields": [{**FIELDS[0], "max": 1000}, FIELDS[1]], "id": "id"}
)


async def started(tmp_path: Path) -> Runtime:
    rt = build_runtime(Settings(data_dir=tmp_path, bootstrap_key="k"), ManualClock(10**12))
    await rt.start()
    return rt


def sql(p: Runtime, query: str) -> list[dict[str, Any]]:
    return p.store.sql("default", query, max_rows=1000, timeout_s=5).to_pylist()


async def settle(p: Runtime, st: StreamState) -> None:
    for topic in (st.topic, st.quarantine_topic, st.quarantine_updates_topic):
        assert await p.materializer.caught_up(topic, p.log.end_offset(topic))


async def send(p: Runtime, st: StreamState, rows: list[dict[str, Any]]) -> dict[str, Any]:
    body = b"\n".join(orjson.dumps(r) for r in rows)
    out = await p.ingest.ingest(st, body, "application/x-ndjson", None, None, "k", "r")
    await settle(p, st)
    return dict(orjson.loads(out.body))


async def test_a_failed_replay_updates_rows_in_place_and_a_passing_one_marks_them(
    tmp_path: Path,
) -> None:
    p = await started(tmp_path)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        rows = [{"x": 100 + i, "id": f"e{i}"} for i in range(3)] + [{"x": 500}, {"x": 501}]
        assert (await send(p, st, rows))["rejected"] == 5
        failed = await p.replay.replay(st, Selection(code="above_max"))
        assert (failed["replayed"], failed["rejected"]) == (5, 5)
        await settle(p, st)
        q = sql(p, "SELECT state, replay_attempts, code FROM quarantine__s")
        assert q == [{"state": "quarantined", "replay_attempts": 1, "code": "above_max"}] * 5

        p.streams.evolve("default", FIXED, 1)
        passed = await p.replay.replay(st, Selection(code="above_max"))
        assert (passed["replayed"], passed["accepted"]) == (5, 5)
        again = await p.replay.replay(st, Selection(code="above_max"))
        assert (again["replayed"], again["accepted"]) == (0, 0)
        await settle(p, st)
        assert sql(p, "SELECT count(*) AS n FROM s") == [{"n": 5}]
        q = sql(p, "SELECT _offset, state, replayed_offset, replay_attempts FROM quarantine__s")
        stored = {s["offset"]: s["stored_offset"] for s in passed["results"][0]["stored"]}
        assert [(r["state"], r["replay_attempts"]) for r in q] == [("replayed", 2)] * 5
        assert {r["_offset"]: r["replayed_offset"] for r in q} == stored
        assert sorted(r["x"] for r in sql(p, "SELECT x FROM s")) == [100, 101, 102, 500, 501]
    finally:
        await p.stop()


async def test_a_crash_after_the_replay_append_neither_loses_nor_repeats(tmp_path: Path) -> None:
    p = await started(tmp_path)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        await send(p, st, [{"x": 100}, {"x": 200, "id": "a"}])
        p.streams.evolve("default", FIXED, 1)
        p.materializer.stop()  # the store takes nothing more: the crash comes before its commit
        out = await p.replay.replay(st, Selection(offsets=[0, 1]))
        assert out["accepted"] == 2
    finally:
        await p.stop()
    p = await started(tmp_path)
    try:
        st = p.streams.get("default", "s")
        await settle(p, st)
        assert sql(p, "SELECT state FROM quarantine__s") == [{"state": "replayed"}] * 2
        again = await p.replay.replay(st, Selection(offsets=[0, 1]))
        assert (again["replayed"], again["skipped"]) == (0, [0, 1])
        await settle(p, st)
        assert sql(p, "SELECT count(*) AS n FROM s") == [{"n": 2}]
    finally:
        await p.stop()


def test_a_quarantine_table_from_before_states_is_upgraded(tmp_path: Path) -> None:
    import pyarrow as pa

    from headwater.catalog.sqlite import Catalog
    from headwater.ingest.streams import QUARANTINE_SCHEMA, StreamDirectory
    from headwater.store.duckdb import DuckDBStore
    from headwater.store.ports import ResultWrite

    catalog = Catalog(tmp_path / "catalog.sqlite")
    store = DuckDBStore(tmp_path / "store.duckdb", memory_limit="256MB", threads=1)
    try:
        catalog.ensure_tenant("default", 0)
        catalog.add_stream_version("default", SCHEMA, 0)
        old = pa.schema([*QUARANTINE_SCHEMA, pa.field("_offset", pa.int64())])
        store.ensure_table("default", "quarantine__s", old)
        rows = pa.table({"code": ["above_max"] * 2, "_offset": [0, 1]})
        store.commit("default", ResultWrite("m", {}, appends={"quarantine__s": rows}))
        StreamDirectory(catalog, store)
        got = store.sql("default", "SELECT state, replay_attempts FROM quarantine__s",
                        max_rows=10, timeout_s=5).to_pylist()  # fmt: skip
        assert got == [{"state": "quarantined", "replay_attempts": 0}] * 2
    finally:
        store.close()
        catalog.close()
