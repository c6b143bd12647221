"""Idempotency answers leave memory for the answer file and outlive the log entries."""

from pathlib import Path

import orjson
import pytest

from headwater.errors import Conflict
from headwater.ingest.streams import StreamState
from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock
from headwater.runtime import Runtime, build_runtime
from headwater.settings import Settings

SCHEMA = schema_from_dict({"name": "s", "fields": [{"name": "x", "type": "int"}]})


async def started(tmp_path: Path, clock: ManualClock) -> Runtime:
    settings = Settings(data_dir=tmp_path, bootstrap_key="k", log_segment_bytes=4096,
                        log_retention="1 minute", idempotency_ttl="1 hour")  # fmt: skip
    rt = build_runtime(settings, clock)
    await rt.start()
    return rt


async def send(p: Runtime, st: StreamState, i: int, key: str) -> bytes:
    body = b"\n".join(orjson.dumps({"x": i * 100 + k}) for k in range(50))
    out = await p.ingest.ingest(st, body, "application/x-ndjson", None, key, "k", "r")
    return out.body


async def test_answers_move_to_disk_and_survive_the_log_and_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000_000)
    p = await started(tmp_path, clock)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        first = [await send(p, st, i, f"key-{i}") for i in range(40)]
        assert len(p.ingest.idempotency) == 40
        assert await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic))
        p.housekeeping.run()
        assert len(p.ingest.idempotency) == 0  # all on disk now
        assert [await send(p, st, i, f"key-{i}") for i in range(40)] == first
        clock.advance(61_000)
        p.housekeeping.run()
        clock.advance(61_000)
        p.housekeeping.run()
        assert p.log.start_offset(st.topic) > 0  # the entries holding early answers are gone
    finally:
        await p.stop()
    p = await started(tmp_path, clock)
    try:
        st = p.streams.get("default", "s")
        assert len(p.ingest.idempotency) == 0  # nothing read back from the log
        assert [await send(p, st, i, f"key-{i}") for i in range(40)] == first
        with pytest.raises(Conflict):  # a reused key with another body
            await send(p, st, 99, "key-3")
        count = p.store.sql("default", "SELECT count(*) AS n FROM s", max_rows=1, timeout_s=5)
        assert count.column("n")[0].as_py() == 40 * 50
    finally:
        await p.stop()


async def test_answers_not_yet_copied_are_read_from_the_log_tail(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000_000)
    p = await started(tmp_path, clock)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        early = await send(p, st, 1, "early")
        p.housekeeping.run()
        late = await send(p, st, 2, "late")  # the process stops before the next copy
    finally:
        await p.stop()
    p = await started(tmp_path, clock)
    try:
        st = p.streams.get("default", "s")
        assert len(p.ingest.idempotency) == 1  # "late", from the log tail
        assert await send(p, st, 1, "early") == early
        assert await send(p, st, 2, "late") == late
    finally:
        await p.stop()


async def test_expired_answers_leave_the_disk(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000_000)
    p = await started(tmp_path, clock)
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        await send(p, st, 1, "k1")
        p.housekeeping.run()
        disk = p.ingest.idempotency.disk
        assert disk is not None and disk.get("default", "s", "k1") is not None
        clock.advance(3_600_001)
        p.housekeeping.run()
        assert disk.get("default", "s", "k1") is None
        again = orjson.loads(await send(p, st, 7, "k1"))  # a new request, not a conflict
        assert again["accepted"] == 50
    finally:
        await p.stop()
