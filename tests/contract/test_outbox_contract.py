"""The ``Outboxes`` contract: a sink's rows are cut into the same requests, under the same
keys, and delivered the same way whether its outbox is in this process (``LocalOutboxes``)
or in a sink worker process (``SinkWorkers``). Real HTTP deliveries to a real local server.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator

import orjson
import pyarrow as pa
import pytest
from prometheus_client import REGISTRY

from downstream import Answer, Downstream
from headwater.log.ports import LogEntry
from headwater.pipelines.processes import WorkerLost
from headwater.sinks.config import http_config
from headwater.sinks.outbox import LocalOutboxes, Outbox, Outboxes
from headwater.sinks.workers import SinkWorkers

TOPIC = "default.readings"


def refuse_13_5(i: int, d: Downstream) -> Answer:
    if b"13.5" in d.seen[i].body:
        return Answer(422, body=b'{"error": "13.5 is not allowed"}')
    return Answer()


@pytest.fixture(params=["here", "worker"])
async def outboxes(request: pytest.FixtureRequest) -> AsyncIterator[Outboxes]:
    made: Outboxes = LocalOutboxes() if request.param == "here" else SinkWorkers(1)
    yield made
    await made.close()


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    d = Downstream(refuse_13_5).start()
    yield d
    d.stop()


async def until(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Wait until ``check()`` holds, or the deadline passes (the assert after says what)."""
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def entry(offset: int, n: int, hot: frozenset[int] = frozenset()) -> LogEntry:
    rows = range(offset, offset + n)
    batch = pa.RecordBatch.from_pydict({
        "device_id": [f"d{i % 3}" for i in rows],
        "ts": pa.array([1_767_225_600_000 + 1000 * i for i in rows], pa.timestamp("ms", tz="UTC")),
        "temperature": [13.5 if i in hot else float(i) for i in rows],
        "_offset": list(rows),  # internal columns stay inside
    })  # fmt: skip
    return LogEntry(TOPIC, offset, batch)


def open_outbox(outboxes: Outboxes, url: str, **config: object) -> Outbox:
    return outboxes.open("partner", True, http_config({"url": url, "backoff_base_s": 0.01,
                                                       **config}))  # fmt: skip


async def test_rows_are_cut_into_requests_under_stable_keys(
    outboxes: Outboxes, downstream: Downstream
) -> None:
    box = open_outbox(outboxes, downstream.url, batch_rows=3)
    try:
        tickets = await box.requests([entry(0, 4), entry(4, 6)], None)
        assert [(t.first, t.last, t.rows) for t in tickets] == [(0, 2, 3), (3, 5, 3),
                                                                (6, 8, 3), (9, 9, 1)]  # fmt: skip
        assert tickets[-1].key == "partner-9"  # a request of one row: the row's key
        again = await box.requests([entry(0, 4), entry(4, 6)], None)  # a replay after a crash
        assert [t.key for t in again] == [t.key for t in tickets]
        assert len({t.key for t in tickets}) == 4 and len({t.id for t in tickets + again}) == 8
        kept = await box.requests([entry(0, 4)], pa.array([True, False, False, True]))
        # requests of stream rows start at multiples of batch_rows, rows left out or not
        assert [(t.first, t.last, t.rows) for t in kept] == [(0, 0, 1), (3, 3, 1)]
        assert await box.requests([entry(0, 2)], pa.array([False, False])) == []
    finally:
        await box.close()


async def test_delivered_bodies_and_dead_rows(outboxes: Outboxes, downstream: Downstream) -> None:
    box = open_outbox(outboxes, downstream.url, batch_rows=2)
    try:
        tickets = await box.requests([entry(10, 4, hot=frozenset({12}))], None)
        results = await asyncio.gather(*(box.deliver(t) for t in tickets))
        (ok, none), (dead, rows) = results
        assert ok.ok and none == []
        assert not dead.ok and dead.status == 422 and dead.attempts == 1
        assert "13.5 is not allowed" in dead.body
        assert [r.offset for r in rows] == [12, 13]  # a refused request: every row dead
        assert orjson.loads(rows[0].json) == {
            "device_id": "d0", "ts": "2026-01-01T00:00:12.000Z", "temperature": 13.5,
        }  # fmt: skip
        assert rows[1].key == "partner-13"
        first = next(s for s in downstream.seen if s.key == tickets[0].key)
        assert first.rows() == [
            {"device_id": "d1", "ts": "2026-01-01T00:00:10.000Z", "temperature": 10.0},
            {"device_id": "d2", "ts": "2026-01-01T00:00:11.000Z", "temperature": 11.0},
        ]
        # a dead letter's body sent again, under its own key (a replay)
        again = await box.send(b'{"temperature": 12}', "partner-12")
        assert again.ok and downstream.seen[-1].key == "partner-12"
        assert downstream.seen[-1].body == b'{"temperature": 12}'
    finally:
        await box.close()


async def test_figures_show_attempts_and_the_window(
    outboxes: Outboxes, downstream: Downstream
) -> None:
    box = open_outbox(outboxes, downstream.url, batch_rows=1, max_concurrency=5)
    try:
        tickets = await box.requests([entry(0, 6, hot=frozenset({5}))], None)
        await asyncio.gather(*(box.deliver(t) for t in tickets))
        # a worker's figures come every 0.2 s, whole
        await until(lambda: (box.stats.attempts, box.stats.failed) == (6, 1))
        assert (box.stats.attempts, box.stats.failed) == (6, 1)
        assert box.stats.statuses == {200: 5, 422: 1}
        assert box.slots.limit == 5 and box.slots.used == 0
        assert box.breaker.state(time.monotonic()) == "closed"
    finally:
        await box.close()


async def test_a_killed_sink_worker_fails_its_calls_and_starts_again(
    downstream: Downstream,
) -> None:
    workers = SinkWorkers(1)
    restarts = REGISTRY.get_sample_value("headwater_sink_worker_restarts_total") or 0.0
    try:
        box = open_outbox(workers, downstream.url, batch_rows=1)
        tickets = await box.requests([entry(0, 2)], None)
        pid = workers.pids()[0]
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(WorkerLost):
            await box.deliver(tickets[0])  # its body went with the process
        await until(lambda: workers.pids() not in ([], [pid]))
        assert workers.pids() and workers.pids() != [pid]
        with pytest.raises(WorkerLost):
            await box.deliver(tickets[1])  # a ticket of the dead process stays dead
        fresh = await box.requests([entry(0, 2)], None)  # opened again in the new process
        assert [t.key for t in fresh] == [t.key for t in tickets]
        assert [(await box.deliver(t))[0].ok for t in fresh] == [True, True]
        assert REGISTRY.get_sample_value("headwater_sink_worker_restarts_total") == restarts + 1
        await box.close()
    finally:
        await workers.close()
    assert workers.pids() == []
