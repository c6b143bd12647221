"""The source contract, run against every pull-source kind of this build.

A kind joins the suite with one driver (``source_drivers.py`` beside this file): it starts the
real counterpart (a broker, a directory, an API), writes records ``{"p", "seq", "eid"}``
into it (``p`` a partition label, ``seq`` counting up per label), writes bad ones, and
gives the source's config. Every kind must then:

- resume after a restart at the committed position (no record again, none missing);
- hold its chunks while pushed back or over the tenant's ingest quota (``backing_off``,
  nothing written), then go on;
- quarantine bad payloads, each with the source named in its ``request_id``;
- survive ``kill -9`` loops of a real server with no loss and no duplicate.

Kinds that replay (files, cursors, Kafka offsets, JetStream sequences, WAL positions)
are exactly-once: their stream has no ``id`` field, so a record read twice would be
stored twice. At-least-once kinds (MQTT QoS 1)
get ``eid`` as the stream's ``id`` and must come out effectively once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from source_drivers import COUNTERPARTS, DRIVERS, Driver

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import Kinds
from headwater.connectors.sources.registry import Sources
from headwater.connectors.sources.runtime import SourceRuntime
from headwater.connectors.sources.workers import remote_kinds
from headwater.ingest.accept import Acceptor
from headwater.ingest.streams import StreamState
from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock
from headwater.runtime import build_runtime
from headwater.settings import Settings
from serverproc import Server

NAME = "src"


def stream_spec(driver: Driver, name: str = "s") -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "fields": [
        {"name": "p", "type": "string", "required": True},
        {"name": "seq", "type": "int", "required": True, "min": 0},
        {"name": "eid", "type": "string"},
    ]}  # fmt: skip
    if not driver.exactly_once:
        spec["id"] = "eid"
    return spec


@pytest.fixture(scope="module", autouse=True)
def counterparts() -> Iterator[None]:
    """The brokers and clusters the drivers share, stopped after the module."""
    yield
    COUNTERPARTS.stop()


KINDS = [
    pytest.param(k, marks=[pytest.mark.kafka] if k == "kafka" else []) for k in sorted(DRIVERS)
]


@pytest.fixture(params=KINDS)
def driver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Driver]:
    d = DRIVERS[request.param](tmp_path / "counterpart")
    yield d
    d.stop()


class Harness:
    """One source of ``driver``'s kind over real components in this process; ``lag`` is
    how far the store is behind the log, as the acceptor's pushback sees it."""

    own_process = False  # each source's reader in a process of its own (source_processes)

    def __init__(self, tmp_path: Path, driver: Driver) -> None:
        self.dir, self.driver = tmp_path / "data", driver
        self.lag = 0
        self.quotas: dict[str, Any] = {}  # the tenant's own quotas, set before the start
        self.made = False

    async def start(self) -> None:
        settings = Settings(data_dir=self.dir, bootstrap_key="k")
        p = self.p = build_runtime(settings, ManualClock(10**12))
        if not self.made:
            p.streams.create("default", schema_from_dict(stream_spec(self.driver)), 0, set())
            rec = SourceRecord("default", NAME, self.driver.kind, "s", self.driver.config(),
                               "running", 1)  # fmt: skip
            p.catalog.put_source(rec)
            self.made = True
        p.quotas.set("default", self.quotas)
        self.sources = Sources(p.catalog, p.clock, self.driver.root)
        acceptor = Acceptor(p.ingest, p.log, p.clock, p.ingest_limits, lambda st: self.lag, 100,
                            p.quotas)  # fmt: skip
        self.positions = p.positions
        kinds: Kinds = {self.driver.kind: self.driver.source}
        if self.own_process:
            kinds = remote_kinds(kinds, self.driver.root or self.dir)
        self.rt = SourceRuntime(self.sources, p.streams, acceptor, self.positions, kinds, p.log)
        await self.rt.start()

    async def stop(self) -> None:
        await self.rt.stop()
        await self.p.stop()  # never started: closes its files

    @property
    def stream(self) -> StreamState:
        return self.p.streams.get("default", "s")

    def view(self) -> dict[str, Any]:
        return self.sources.view(self.sources.get("default", NAME))

    def rows(self) -> Counter[tuple[str, int]]:
        found: Counter[tuple[str, int]] = Counter()
        for e in self.p.log.read(self.stream.topic, 0, 10**7):
            found.update(zip(e.batch.column("p").to_pylist(), e.batch.column("seq").to_pylist(),
                             strict=True))  # fmt: skip
        return found

    def quarantined(self) -> list[dict[str, Any]]:
        return [r for e in self.p.log.read(self.stream.quarantine_topic, 0, 10**7)
                for r in e.batch.to_pylist()]  # fmt: skip


@pytest.fixture
async def harness(tmp_path: Path, driver: Driver) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, driver)
    yield h
    if hasattr(h, "rt"):
        await h.stop()


def expected(parts: dict[str, range]) -> Counter[tuple[str, int]]:
    return Counter((p, i) for p, seqs in parts.items() for i in seqs)


async def until(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        if time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.02)
    return got


async def test_a_restart_resumes_at_the_committed_position(
    harness: Harness, driver: Driver
) -> None:
    first = {"a": range(0, 60), "b": range(0, 45)}
    for part, seqs in first.items():
        driver.produce(part, seqs)
    await harness.start()
    assert await until(lambda: harness.rows() == expected(first)), harness.view()
    # Not stopped mid-snapshot (a CDC snapshot's last, empty chunk may not be committed yet):
    # a snapshot resumed from a newer one gives rows changed meanwhile twice, by design.
    assert await until(lambda: not any(p.startswith("snapshot:")
                                       for p in harness.view()["positions"].values()))  # fmt: skip
    committed = harness.view()["positions"]
    await harness.stop()
    second = {"a": range(60, 100), "b": range(45, 70), "c": range(0, 30)}
    for part, seqs in second.items():
        driver.produce(part, seqs)
    await harness.start()
    both = expected(first) + expected(second)
    assert await until(lambda: harness.rows() == both), (harness.rows() - both, harness.view())
    new = sum(len(s) for s in second.values())  # the counters follow the log entry
    view = await until(lambda: (v := harness.view())["rows_in"] == new and v)
    assert view and view["status"] == "running", (harness.view(), committed)
    if driver.exactly_once:  # nothing was even read twice
        assert view["duplicates"] == 0, view


async def test_pushback_holds_chunks_and_nothing_is_dropped(
    harness: Harness, driver: Driver
) -> None:
    parts = {"a": range(0, 80), "b": range(0, 20)}
    harness.lag = 10**9  # the store far behind the log
    for part, seqs in parts.items():
        driver.produce(part, seqs)
    await harness.start()
    view = await until(lambda: (v := harness.view())["status"] == "backing_off" and v)
    assert view and view["reason"].startswith("pushback"), harness.view()
    assert harness.p.log.end_offset(harness.stream.topic) == 0  # held, not written
    harness.lag = 0
    assert await until(lambda: harness.rows() == expected(parts)), harness.view()
    assert await until(lambda: harness.view()["status"] == "running"), harness.view()


async def test_over_the_tenants_ingest_quota_a_source_waits_and_drops_nothing(
    harness: Harness, driver: Driver
) -> None:
    parts = {"a": range(0, 200), "b": range(0, 100)}  # more than one chunk of any kind
    for part, seqs in parts.items():
        driver.produce(part, seqs)
    harness.quotas = {"ingest_rows_per_s": 100}
    await harness.start()
    view = await until(lambda: (v := harness.view())["status"] == "backing_off" and v)
    assert view and view["reason"].startswith("quota"), harness.view()
    assert await until(lambda: harness.rows() == expected(parts)), harness.view()
    assert await until(lambda: harness.view()["status"] == "running"), harness.view()


async def test_bad_payloads_are_quarantined_with_the_source_named(
    harness: Harness, driver: Driver
) -> None:
    driver.produce("a", range(0, 10))
    bad = driver.produce_bad()
    driver.produce("a", range(10, 20))
    await harness.start()
    assert await until(lambda: harness.rows() == expected({"a": range(20)})), harness.view()
    assert await until(lambda: harness.view()["rows_rejected"] == bad), harness.view()
    q = await until(lambda: len(r := harness.quarantined()) == bad and r)
    assert q and all(r["request_id"].startswith(f"source:{NAME}:") for r in q), q
    assert "below_min" in {r["code"] for r in q}, q
    assert harness.view()["last_error"], harness.view()


@pytest.mark.slow
@pytest.mark.kafka
def test_kill_9_loops_lose_nothing_and_double_nothing_for_every_kind(tmp_path: Path) -> None:
    """Every kind at once in one server, killed twice while the sources are reading."""
    drivers = {kind: make(tmp_path / kind) for kind, make in sorted(DRIVERS.items())}
    env = {k: v for d in drivers.values() for k, v in d.server_env().items()}
    srv = Server(tmp_path / "data", **env).start()
    per_part = 2500
    want = expected({"a": range(per_part), "b": range(per_part)})
    try:
        with srv.client() as c:
            for kind, d in drivers.items():
                spec = stream_spec(d, f"s_{kind}")
                assert c.post("/v1/streams", json=spec).status_code == 201
                source = {"name": f"src_{kind}", "kind": kind, "stream": f"s_{kind}",
                          "config": d.config()}  # fmt: skip
                assert c.post("/v1/sources", json=source).status_code == 201, kind
        for half in (range(0, per_part // 2), range(per_part // 2, per_part)):
            for d in drivers.values():
                for part in ("a", "b"):
                    d.produce(part, half)
            with srv.client() as c:  # every source is reading when the server is killed
                assert _wait(lambda: all(c.get(f"/v1/sources/src_{k}").json()["rows_in"] >= 300
                                         for k in drivers))  # fmt: skip
            srv.kill()
            srv.start()
        with srv.client() as c:
            for kind in drivers:
                sql = f"SELECT p, seq FROM s_{kind}"

                def stored(sql: str = sql) -> Counter[tuple[str, int]]:
                    rows = c.post("/v1/query", json={"sql": sql}).json()["rows"]
                    return Counter((p, s) for p, s in rows)

                got = _wait(lambda s=stored: (r := s()).total() >= want.total() and r, 90)
                assert got == want, (kind, (got or Counter()) - want, want - (got or Counter()))
    finally:
        srv.stop()
        for d in drivers.values():
            d.stop()


def _wait(check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := check()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got
