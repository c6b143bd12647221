"""The runtime owns every component: the app starts nothing, ``start``/``stop`` run them."""

import asyncio
import time
from pathlib import Path

import httpx

from headwater.api.app import create_app
from headwater.model.time import ManualClock
from headwater.runtime import build_runtime
from headwater.settings import Settings

KEY = "hw_test_runtime"


def settings(data: Path, **kw: object) -> Settings:
    return Settings(data_dir=data, bootstrap_key=KEY, **kw)  # type: ignore[arg-type]


async def until(check, timeout_s: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_the_app_starts_nothing_and_the_runtime_starts_and_stops_once(
    tmp_path: Path,
) -> None:
    rt = build_runtime(settings(tmp_path / "d"))
    app = create_app(rt)
    async with app.router.lifespan_context(app):
        assert not rt.materializer.alive  # mounting routes started nothing
    await rt.start()
    await rt.start()  # a second start changes nothing
    try:
        assert rt.materializer.alive
        headers = {"Authorization": f"Bearer {KEY}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hw", headers=headers
        ) as c:
            spec = {"name": "s", "fields": [{"name": "k", "type": "string"},
                                            {"name": "v", "type": "int"}]}  # fmt: skip
            assert (await c.post("/v1/streams", json=spec)).status_code == 201
            sql = "CREATE PIPELINE per_k AS SELECT k, count(*) AS n FROM s GROUP BY k WITH (emit = 'changes')"
            assert (await c.post("/v1/pipelines", json={"sql": sql})).status_code == 201
            body = "\n".join(f'{{"k": "a", "v": {i}}}' for i in range(10))
            r = await c.post(
                "/v1/streams/s/events",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            )
            assert r.json()["accepted"] == 10

            async def counted() -> list[list[object]]:
                r = await c.post("/v1/query", json={"sql": "SELECT k, n FROM per_k"})
                rows: list[list[object]] = r.json().get("rows", [])
                return rows

            deadline = time.monotonic() + 20
            while await counted() != [["a", 10]]:  # the runtime's pipelines run
                assert time.monotonic() < deadline, await counted()
                await asyncio.sleep(0.05)
    finally:
        await rt.stop()
    assert not rt.materializer.alive
    await rt.stop()  # and a second stop too


async def test_stop_without_start_only_closes_the_data_dir(tmp_path: Path) -> None:
    rt = build_runtime(settings(tmp_path / "d"))
    await rt.stop()
    again = build_runtime(settings(tmp_path / "d"))  # the files were let go
    await again.stop()


async def test_the_demo_simulator_is_a_source_that_resumes_where_it_stopped(
    tmp_path: Path,
) -> None:
    s = settings(tmp_path / "d", demo_rate=2000.0, demo_malformed_rate=0.2)
    rt = build_runtime(s, ManualClock(1_800_000_000_000), demo=True)
    assert rt.demo is not None
    fleet, st = rt.demo, rt.demo.stream
    await rt.start()
    try:
        assert fleet.running
        assert [r.kind for r in rt.sources.in_tenant("default")] == ["simulator"]
        assert sorted(rt.pipelines.names("default")) == [
            "anomalies",
            "category_stats",
            "device_minute",
        ]
        assert await until(lambda: rt.log.end_offset(st.topic) >= 200)
        # rows that fail validation were quarantined, as from any source
        assert await until(lambda: rt.log.end_offset(st.quarantine_topic) > 0)
        assert fleet.pause() and not fleet.pause()
        sent = fleet.sent
        await asyncio.sleep(0.3)
        assert fleet.sent == sent and not fleet.running
    finally:
        await rt.stop()

    # A restart resumes after the last committed event: no event id comes twice.
    rt = build_runtime(s, ManualClock(1_800_000_000_000), demo=True)
    assert rt.demo is not None
    await rt.start()
    try:
        assert rt.demo.running  # the demo streams from the start
        assert await until(lambda: rt.demo is not None and rt.demo.sent >= 500)
        stats = rt.sources.stats(rt.sources.get("default", "simulator"))
        assert stats.duplicates == 0
    finally:
        await rt.stop()
