"""Pipelines whose operators run in worker processes (``pipeline_workers``).

The same input goes through a server with workers and one without: every output column
of every pipeline must match. A worker killed with SIGKILL while it works is started
again, and its pipelines restore their last checkpoint: nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from headwater.api.app import create_app
from headwater.engine import Pipeline, plan_pipeline
from headwater.engine.udfs import load_modules
from headwater.errors import NotFound
from headwater.pipelines.processes import WorkerLost
from headwater.pipelines.workers import EngineSpec, RemotePipeline, WorkerPool
from headwater.runtime import build_runtime
from headwater.runtime.core import Runtime
from headwater.settings import Settings

KEY = "hw_test_workers"
STREAM = {
    "name": "readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float"},
        {"name": "seq", "type": "int"},
    ],
}
SITES = {
    "name": "sites",
    "fields": [{"name": "device_id", "type": "string", "required": True},
               {"name": "site", "type": "string"}],
    "key": ["device_id"],
}  # fmt: skip
PIPELINES = {
    # a window aggregate: state (open windows) lives in the worker
    "per_minute": "CREATE PIPELINE per_minute AS SELECT device_id, window_start, count(*) AS n, "
    "sum(seq) AS total, max(temperature) AS hi FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
    "GROUP BY device_id, window_start, window_end WITH (emit = 'changes')",
    # stateless, with a lookup join on a reference table the worker asks the server for
    "placed": "CREATE PIPELINE placed AS SELECT r.device_id, r.seq, s.site FROM readings r "
    "LEFT JOIN sites s ON r.device_id = s.device_id WHERE r.temperature > 20",
}
DEVICES = 7


def body(first: int, n: int) -> str:
    """``n`` events from ``seq = first`` on, over 7 devices and a few minutes."""
    lines = []
    for seq in range(first, first + n):
        minute, second = divmod(seq // 40, 60)
        ts = f"2026-01-01T00:{minute % 60:02d}:{second:02d}Z"
        temp = 15 + (seq * 7) % 13
        lines.append(f'{{"device_id": "d{seq % DEVICES}", "ts": "{ts}", '
                     f'"temperature": {temp}, "seq": {seq}}}')  # fmt: skip
    return "\n".join(lines)


class Server:
    def __init__(self, rt: Runtime, client: httpx.AsyncClient) -> None:
        self.rt, self.c = rt, client

    async def send(self, first: int, n: int) -> None:
        r = await self.c.post("/v1/streams/readings/events", content=body(first, n),
                              headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert r.status_code == 200 and r.json()["accepted"] == n, r.text

    async def rows(self, sql: str) -> list[list[Any]]:
        r = await self.c.post("/v1/query", json={"sql": sql})
        assert r.status_code == 200, r.text
        rows: list[list[Any]] = r.json()["rows"]
        return rows

    async def until(self, check: Callable[[], Any], timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while not (got := await check()):
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)
        return got


@asynccontextmanager
async def serve(data: Path, workers: int, udf_modules: str = "") -> AsyncIterator[Server]:
    settings = Settings(data_dir=data, bootstrap_key=KEY, pipeline_workers=workers,
                        checkpoint_interval_s=0.2, udf_modules=udf_modules)  # fmt: skip
    load_modules(udf_modules)  # as ``headwater serve`` does, before the runtime
    rt = build_runtime(settings)
    await rt.start()
    try:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://hw",
                                     headers={"Authorization": f"Bearer {KEY}"}) as c:  # fmt: skip
            yield Server(rt, c)
    finally:
        await rt.stop()


async def setup(s: Server) -> None:
    assert (await s.c.post("/v1/streams", json=STREAM)).status_code == 201
    assert (await s.c.post("/v1/tables", json=SITES)).status_code == 201
    sites = [{"device_id": f"d{i}", "site": f"site-{i % 3}"} for i in range(DEVICES - 1)]
    assert (await s.c.post("/v1/tables/sites/rows", json=sites)).status_code == 200
    for sql in PIPELINES.values():
        r = await s.c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text


QUERIES = {
    "per_minute": "SELECT device_id, window_start, n, total, hi FROM per_minute ORDER BY ALL",
    "placed": "SELECT device_id, seq, site FROM placed ORDER BY ALL",
}


async def results(s: Server, events: int) -> dict[str, list[list[Any]]]:
    """Every pipeline's rows once it has read all ``events``."""

    async def counted() -> bool:
        got = await s.rows("SELECT sum(n) FROM per_minute")
        return bool(got and got[0][0] == events)

    await s.until(counted)
    for name in PIPELINES:  # and every pipeline has committed all it read

        async def caught_up(name: str = name) -> bool:
            st = (await s.c.get(f"/v1/pipelines/{name}")).json()
            return bool(st["committed_offset"] >= events and st["status"] == "running")

        await s.until(caught_up)
    return {name: await s.rows(sql) for name, sql in QUERIES.items()}


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[Any]]]:
    """The results with the operators in the server process."""

    async def run() -> dict[str, list[list[Any]]]:
        async with serve(tmp_path_factory.mktemp("inproc"), 0) as s:
            await setup(s)
            for first in range(0, 6000, 1000):
                await s.send(first, 1000)
            return await results(s, 6000)

    return asyncio.run(run())


async def test_operators_in_a_worker_give_every_column_the_server_process_gives(
    tmp_path: Path, expected: dict[str, list[list[Any]]]
) -> None:
    async with serve(tmp_path / "d", 1) as s:
        assert s.rt.pipelines.workers is not None
        [pid] = s.rt.pipelines.workers.pids()
        assert pid != os.getpid()
        await setup(s)
        for first in range(0, 6000, 1000):
            await s.send(first, 1000)
        got = await results(s, 6000)
        assert got == expected
        assert len(got["placed"]) > 100 and any(r[2] is None for r in got["placed"])

        async def reported() -> dict[str, Any] | None:  # the worker sends it every 0.2 s
            st: dict[str, Any] = (await s.c.get("/v1/pipelines/per_minute")).json()
            return st if st["watermark_ms"] is not None else None

        st = await s.until(reported)
        assert st["worker_pid"] == pid


async def test_a_killed_worker_is_started_again_and_its_pipelines_lose_and_double_nothing(
    tmp_path: Path, expected: dict[str, list[list[Any]]]
) -> None:
    async with serve(tmp_path / "d", 1) as s:
        pool = s.rt.pipelines.workers
        assert pool is not None
        restarts = _restarts()
        await setup(s)
        for first in range(0, 6000, 1000):
            await s.send(first, 1000)
            if first in (2000, 4000):  # while the worker holds state not yet checkpointed
                [pid] = pool.pids()
                os.kill(pid, signal.SIGKILL)
                await s.until(lambda pid=pid: _async(pool.pids() not in ([], [pid])))
        assert await results(s, 6000) == expected
        assert _restarts() >= restarts + 2
        for name in PIPELINES:
            assert (await s.c.get(f"/v1/pipelines/{name}")).json()["status"] == "running"


async def test_a_reference_table_update_reaches_the_worker(tmp_path: Path) -> None:
    async with serve(tmp_path / "d", 1) as s:
        await setup(s)
        await s.send(0, 300)

        def hot(seqs: range) -> int:  # rows of d6 that pass the pipeline's filter
            return sum(1 for q in seqs if q % DEVICES == 6 and 15 + (q * 7) % 13 > 20)

        before = "SELECT count(*) FROM placed WHERE device_id = 'd6' AND site IS NULL"
        assert await s.until(lambda: _rows(s, before)) == [[hot(range(300))]]
        r = await s.c.post("/v1/tables/sites/rows", json=[{"device_id": "d6", "site": "new-site"}])
        assert r.status_code == 200
        await s.send(300, 300)  # d6 had no site before; its new rows have one now
        after = "SELECT count(*) FROM placed WHERE device_id = 'd6' AND site = 'new-site'"
        assert await s.until(lambda: _rows(s, after)) == [[hot(range(300, 600))]]
        assert await s.rows(before) == [[hot(range(300))]]


async def test_udfs_load_in_the_worker_and_its_row_errors_reach_the_errors_table(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path / "d", 1, udf_modules="udf_functions") as s:
        await setup(s)
        sql = ("CREATE PIPELINE celsius AS SELECT device_id, seq, "
               "checked_celsius(temperature) AS c FROM readings")  # fmt: skip
        assert (await s.c.post("/v1/pipelines", json={"sql": sql})).status_code == 201
        await s.send(0, 50)
        bad = '{"device_id": "dx", "ts": "2026-01-01T00:00:00Z", "temperature": -300, "seq": 99}'
        r = await s.c.post("/v1/streams/readings/events", content=bad,
                           headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert r.json()["accepted"] == 1
        errors = await s.until(
            lambda: _rows(s, "SELECT device_id, seq, _error FROM celsius_errors")
        )
        [[device, seq, error]] = errors
        assert (device, seq) == ("dx", 99) and "absolute zero" in error
        rows = await s.until(lambda: _rows(s, "SELECT count(*), sum(seq), sum(c) FROM celsius "
                                              "HAVING count(*) = 50"))  # fmt: skip
        assert rows == [[50, sum(range(50)), float(sum(15 + (q * 7) % 13 for q in range(50)))]]


async def _async(value: Any) -> Any:
    return value


async def _rows(s: Server, sql: str) -> list[list[Any]] | None:
    rows = await s.rows(sql)
    return rows if rows and rows[0][0] else None


def _restarts() -> float:
    return REGISTRY.get_sample_value("headwater_pipeline_worker_restarts_total") or 0.0


class Tables:
    """Reference tables with versions, as the server keeps them."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        self.tables, self.versions = tables, dict.fromkeys(tables, 1)

    def get(self, name: str) -> pa.Table:
        if name not in self.tables:
            raise NotFound(f"reference table {name!r} does not exist", code="unknown_table")
        return self.tables[name]

    def version(self, name: str) -> int:
        return self.versions.get(name, 0)


class NoModels:
    def read(self, name: str, version: int | None) -> tuple[int, bytes]:
        raise NotFound(f"model {name!r} does not exist", code="unknown_model")


SCHEMA = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
                    ("temperature", pa.float64())])  # fmt: skip
LOOKUP = ("CREATE PIPELINE p AS SELECT r.device_id, s.site FROM readings r "
          "JOIN sites s ON r.device_id = s.device_id")  # fmt: skip


def remote(pool: WorkerPool, sql: str, tables: Tables) -> RemotePipeline:
    plan = plan_pipeline(sql, streams=["readings"])
    local = Pipeline(plan, SCHEMA, tables)
    return RemotePipeline(pool, local, EngineSpec(plan, {"readings": SCHEMA}), tables, NoModels())


def test_an_error_raised_in_the_server_for_the_worker_comes_back_with_its_code() -> None:
    pool = WorkerPool(1, "")
    pool.start()
    try:
        tables = Tables({"sites": pa.table({"device_id": ["a"], "site": ["x"]})})
        p = remote(pool, LOOKUP, tables)
        batch = pa.table({"device_id": ["a", "b"], "ts": pa.array([1, 2], SCHEMA.field("ts").type),
                          "temperature": [1.0, 2.0]})  # fmt: skip
        assert p.process(batch, 0).appends.to_pylist() == [{"device_id": "a", "site": "x"}]
        q = remote(pool, LOOKUP, tables)
        del tables.tables["sites"]  # gone by the time the worker builds its copy
        with pytest.raises(NotFound) as err:
            q.process(batch, 0)
        assert err.value.code == "unknown_table" and "'sites' does not exist" in err.value.message
        # the worker and the first pipeline are unharmed
        assert p.process(batch, 0).appends.num_rows == 1
    finally:
        pool.close()


def test_a_pipeline_on_a_killed_worker_raises_lost_once_then_restores_its_snapshot() -> None:
    pool = WorkerPool(1, "")
    pool.start()
    try:
        sql = ("CREATE PIPELINE c AS SELECT device_id, count(*) AS n FROM readings "
               "GROUP BY device_id WITH (emit = 'changes')")  # fmt: skip
        p = remote(pool, sql, Tables({}))
        batch = pa.table({"device_id": ["a", "a", "b"], "temperature": [1.0, 2.0, 3.0],
                          "ts": pa.array([1, 2, 3], SCHEMA.field("ts").type)})  # fmt: skip
        p.process(batch, 0)
        saved = p.snapshot()
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLost):
            p.process(batch, 0)
        assert pool.pids() and pool.pids() != [pid]
        p.restore(saved)  # built again on the new worker, then restored
        out = p.process(batch, 0).upserts
        assert sorted(out.to_pylist(), key=str) == [{"device_id": "a", "n": 4},
                                                    {"device_id": "b", "n": 2}]  # fmt: skip
    finally:
        pool.close()


async def test_a_model_is_scored_in_the_worker_as_the_model_does(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(15, 28, 400), rng.uniform(0, 600, 400)]).astype(np.float32)
    reg = DecisionTreeRegressor(max_depth=5, random_state=0).fit(x, x[:, 0] * 2 + x[:, 1] / 7)
    async with serve(tmp_path / "d", 1) as s:
        await setup(s)
        r = await s.c.post("/v1/models", params={"name": "heat"},
                           content=to_onnx(reg, x[:1]).SerializeToString(),
                           headers={"Content-Type": "application/octet-stream"})  # fmt: skip
        assert r.status_code == 201, r.text
        sql = ("CREATE PIPELINE scored AS SELECT seq, temperature, "
               "predict('heat', temperature, seq) AS heat FROM readings")  # fmt: skip
        assert (await s.c.post("/v1/pipelines", json={"sql": sql})).status_code == 201
        await s.send(0, 500)
        got = await s.until(lambda: _rows(s, "SELECT count(*) FROM scored HAVING count(*) = 500"))
        assert got == [[500]]
        rows = await s.rows("SELECT seq, temperature, heat FROM scored ORDER BY seq")
        feats = np.array([[t, q] for q, t, _ in rows], dtype=np.float32)
        want = reg.predict(feats)
        assert [h for _, _, h in rows] == pytest.approx(list(want), rel=1e-6)


async def test_a_replaced_pipeline_keeps_its_state_and_a_dropped_one_leaves_its_worker(
    tmp_path: Path,
) -> None:
    async with serve(tmp_path / "d", 1) as s:
        pool = s.rt.pipelines.workers
        assert pool is not None
        await setup(s)
        await s.send(0, 400)
        await results(s, 400)  # per_minute has read, and checkpointed, all 400
        assert pool.workers[0].hosted == 2
        wider = PIPELINES["per_minute"].replace(
            "max(temperature) AS hi", "max(temperature) AS hi, sum(seq) / count(*) AS mean"
        )
        r = await s.c.put("/v1/pipelines/per_minute", json={"sql": wider})
        assert r.status_code == 200, r.text
        await s.send(400, 400)
        # the windows go on from the old state: every count covers all 800 events
        got = await s.until(lambda: _rows(s, "SELECT sum(n), sum(total) FROM per_minute "
                                             "HAVING sum(n) = 800"))  # fmt: skip
        assert got == [[800, sum(range(800))]]
        st = (await s.c.get("/v1/pipelines/per_minute")).json()
        assert st["metrics"]["rows_in"] == 400  # it went on from offset 400
        assert pool.workers[0].hosted == 2  # the new one runs there; the old one let go
        r = await s.c.request("DELETE", "/v1/pipelines/placed")
        assert r.status_code == 200, r.text
        assert pool.workers[0].hosted == 1
