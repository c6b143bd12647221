"""The pull-source runtime: positions resume, pushback holds chunks, failures are shown."""

import asyncio
import time
from functools import partial
from pathlib import Path
from typing import ClassVar

import orjson

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.files import DirectorySource, identity
from headwater.connectors.sources.ports import DONE, Chunk, End, Positions
from headwater.connectors.sources.positions import PositionFile
from headwater.connectors.sources.registry import Sources
from headwater.connectors.sources.runtime import SourceRuntime
from headwater.errors import RateLimited
from headwater.ingest.accept import Acceptor, Origin
from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock
from headwater.runtime import Runtime, build_runtime
from headwater.settings import Settings

SCHEMA = schema_from_dict({"name": "s", "fields": [{"name": "seq", "type": "int"}]})


class Numbers:
    """A replayable in-memory source: partition ``p`` holds rows 0..n-1, 10 per chunk."""

    opened: ClassVar[list[str | None]] = []

    def __init__(self, rec: SourceRecord) -> None:
        self.n = int(rec.config["n"])

    def partitions(self, committed: Positions) -> list[str]:
        return ["p"]

    def open(self, partition: str, position: str | None) -> "Numbers.Reader":
        Numbers.opened.append(position)
        return Numbers.Reader(int(position or 0), self.n)

    class Reader:
        def __init__(self, at: int, n: int) -> None:
            self.at, self.n = at, n

        def read(self, timeout_s: float) -> Chunk | End | None:
            if self.at >= self.n:
                time.sleep(timeout_s / 10)
                return None
            rows = range(self.at, min(self.n, self.at + 10))
            self.at = rows[-1] + 1
            body = b"".join(orjson.dumps({"seq": i}) + b"\n" for i in rows)
            return Chunk(body, "ndjson", "p", str(self.at))

        def close(self) -> None:
            pass


def runtime(p: Runtime, lag: list[int], path: Path) -> tuple[SourceRuntime, Sources]:
    sources = Sources(p.catalog, p.clock)
    acceptor = Acceptor(p.ingest, p.log, p.clock, p.ingest_limits, lambda st: lag[0], 100)
    files = PositionFile(path)
    return SourceRuntime(sources, p.streams, acceptor, files, {"file": Numbers}, p.log), sources


async def until(check, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_pushback_pauses_and_a_restart_resumes_at_the_committed_position(
    tmp_path: Path,
) -> None:
    p = build_runtime(Settings(data_dir=tmp_path / "d", bootstrap_key="k"), ManualClock(10**12))
    await p.start()
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        p.catalog.put_source(SourceRecord("default", "nums", "file", "s", {"n": 55}, "running", 1))
        lag = [1000]
        rt, sources = runtime(p, lag, tmp_path / "pos.sqlite")
        await rt.start()
        rec = sources.get("default", "nums")
        assert await until(lambda: sources.view(rec)["status"] == "backing_off")
        assert sources.view(rec)["reason"].startswith("pushback")
        assert p.log.end_offset(st.topic) == 0  # held, not dropped, not written
        lag[0] = 0
        assert await until(lambda: sources.view(rec)["rows_in"] == 55)
        assert sources.view(rec)["status"] == "running"
        assert sources.view(rec)["positions"] == {"p": "55"}
        await rt.stop()
        p.catalog.drop_source("default", "nums")  # the same source (same epoch), more rows
        p.catalog.put_source(SourceRecord("default", "nums", "file", "s", {"n": 80}, "running", 1))
        rt, sources = runtime(p, lag, tmp_path / "pos.sqlite")
        Numbers.opened.clear()
        await rt.start()
        rec = sources.get("default", "nums")
        assert await until(lambda: sources.view(rec)["rows_in"] == 25)
        assert Numbers.opened[0] == "55"
        rows = [r.batch.column("seq").to_pylist() for r in p.log.read(st.topic, 0, 10**6)]
        assert sorted(x for chunk in rows for x in chunk) == list(range(80))
        paused = sources.set_status("default", "nums", "paused")
        assert sources.view(paused)["status"] == "paused"
        assert all(t.done() for t in rt._tasks.values()) and not rt._tasks
        await rt.stop()
    finally:
        await p.stop()


async def test_a_source_of_a_missing_stream_fails_with_the_reason(tmp_path: Path) -> None:
    p = build_runtime(Settings(data_dir=tmp_path / "d", bootstrap_key="k"), ManualClock(10**12))
    await p.start()
    try:
        p.catalog.put_source(SourceRecord("default", "x", "file", "gone", {"n": 1}, "running", 1))
        rt, sources = runtime(p, [0], tmp_path / "pos.sqlite")
        await rt.start()
        rec = sources.get("default", "x")
        assert await until(lambda: sources.view(rec)["status"] == "failed")
        assert "gone" in sources.view(rec)["reason"]
        await rt.stop()
    finally:
        await p.stop()


class Quota:
    """Tenant rates that refuse the first ``refusals`` chunks."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    def take_ingest(self, tenant: str, rows: int, nbytes: int, now_s: float) -> None:
        if self.refusals:
            self.refusals -= 1
            raise RateLimited("over the tenant's rows/s", retry_after_s=0.05)


async def test_a_source_over_its_tenant_quota_waits_and_loses_nothing(tmp_path: Path) -> None:
    p = build_runtime(Settings(data_dir=tmp_path / "d", bootstrap_key="k"), ManualClock(10**12))
    await p.start()
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        p.catalog.put_source(SourceRecord("default", "nums", "file", "s", {"n": 30}, "running", 1))
        sources = Sources(p.catalog, p.clock)
        quota = Quota(refusals=20)
        acceptor = Acceptor(p.ingest, p.log, p.clock, p.ingest_limits, lambda st: 0, 100, quota)
        rt = SourceRuntime(sources, p.streams, acceptor, PositionFile(tmp_path / "pos.sqlite"),
                           {"file": Numbers}, p.log)  # fmt: skip
        await rt.start()
        rec = sources.get("default", "nums")
        assert await until(lambda: (sources.view(rec)["reason"] or "").startswith("quota"))
        assert await until(lambda: sources.view(rec)["rows_in"] == 30)
        rows = [e.batch.column("seq").to_pylist() for e in p.log.read(st.topic, 0, 10**6)]
        assert sorted(x for chunk in rows for x in chunk) == list(range(30))
        assert quota.refusals == 0
        await rt.stop()
    finally:
        await p.stop()


async def test_an_unreadable_file_is_quarantined_once_and_the_others_imported(
    tmp_path: Path,
) -> None:
    p = build_runtime(Settings(data_dir=tmp_path / "d", bootstrap_key="k"), ManualClock(10**12))
    await p.start()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    (inbox / "good.ndjson").write_bytes(b'{"seq": 1}\n{"seq": 2}\n')
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        config = {"path": str(inbox), "settle_ms": 0}
        p.catalog.put_source(SourceRecord("default", "in", "file", "s", config, "running", 1))
        sources = Sources(p.catalog, p.clock)
        acceptor = Acceptor(p.ingest, p.log, p.clock, p.ingest_limits, lambda st: 0, 100)
        kinds = {"file": lambda rec: DirectorySource(rec, tmp_path)}
        rt = SourceRuntime(sources, p.streams, acceptor, PositionFile(tmp_path / "pos.sqlite"),
                           kinds, p.log)  # fmt: skip
        await rt.start()
        rec = sources.get("default", "in")
        assert await until(lambda: sources.view(rec)["partitions_done"] == 2)
        view = sources.view(rec)
        assert (view["rows_in"], view["rows_rejected"], view["status"]) == (2, 1, "running")
        assert "bad.parquet" in view["last_error"]
        [q] = p.log.read(st.quarantine_topic, 0)
        assert q.batch.column("code").to_pylist() == ["unreadable_file"]
        await rt.stop()
    finally:
        await p.stop()


async def test_a_file_finished_by_a_commit_the_position_file_missed_stays_finished(
    tmp_path: Path,
) -> None:
    """A crash between a chunk's durable append and the position file's copy of it, then
    two restarts: the second must still see the file's last commit (the one the file never
    copied), even after later commits moved the file's progress past it."""
    p = build_runtime(Settings(data_dir=tmp_path / "d", bootstrap_key="k"), ManualClock(10**12))
    await p.start()
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    first = inbox / "a.ndjson"
    first.write_bytes(b"".join(orjson.dumps({"seq": i}) + b"\n" for i in range(3)))
    try:
        st = p.streams.create("default", SCHEMA, 0, set())
        config = {"path": str(inbox), "settle_ms": 0}
        rec = SourceRecord("default", "in", "file", "s", config, "running", 1)
        p.catalog.put_source(rec)
        acceptor = Acceptor(p.ingest, p.log, p.clock, p.ingest_limits, lambda st: 0, 100)
        kinds = {"file": lambda rec: DirectorySource(rec, tmp_path)}

        def source_runtime(files: PositionFile) -> tuple[SourceRuntime, Sources]:
            sources = Sources(p.catalog, p.clock)
            return SourceRuntime(sources, p.streams, acceptor, files, kinds, p.log), sources

        # The last run committed a.ndjson's only chunk (its position ``done``) to the log,
        # as ``SourceRuntime.commit`` does, and died before copying it to the position file.
        reader = DirectorySource(rec, tmp_path).open(identity(first, inbox), None)
        chunk = reader.read(0)
        reader.close()
        assert isinstance(chunk, Chunk) and chunk.position == DONE
        origin = Origin("in", chunk.partition, chunk.position, rec.created_ms)
        await acceptor.accept(st, chunk.data, chunk.fmt, origin, 1)

        def stored() -> list[int]:
            entries = p.log.read(st.topic, 0, 10**6)
            return sorted(x for e in entries for x in e.batch.column("seq").to_pylist())

        for restart, more in enumerate((range(10, 12), range(20, 22))):
            (inbox / f"{restart}.ndjson").write_bytes(
                b"".join(orjson.dumps({"seq": i}) + b"\n" for i in more)
            )
            files = PositionFile(tmp_path / "pos.sqlite")  # a restart: everything anew
            rt, sources = source_runtime(files)
            await rt.start()
            view = partial(sources.view, sources.get("default", "in"))
            assert await until(lambda view=view, n=restart + 2: view()["partitions_done"] == n)
            await rt.stop()
            files.close()
        assert stored() == [0, 1, 2, 10, 11, 20, 21]
    finally:
        await p.stop()
