"""The source contract again, each source's reader in a process of its own
(``source_processes``): the same real counterparts, the same checks, and those of the
read ahead (the worker reads the next chunk while the server accepts one)."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from source_drivers import Driver
from test_source_contract import (  # noqa: F401  (the fixtures and tests run here too)
    Harness,
    counterparts,
    driver,
    expected,
    test_a_restart_resumes_at_the_committed_position,
    test_bad_payloads_are_quarantined_with_the_source_named,
    test_pushback_holds_chunks_and_nothing_is_dropped,
    until,
)

from serverproc import children


@pytest.fixture
async def harness(tmp_path: Path, driver: Driver) -> AsyncIterator[Harness]:  # noqa: F811
    h = Harness(tmp_path, driver)
    h.own_process = True
    yield h
    if hasattr(h, "rt"):
        await h.stop()


def reader_processes() -> list[int]:
    """This test process's source worker processes."""
    found = []
    for pid in children(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"headwater.connectors.sources.workers" in cmdline:
            found.append(pid)
    return found


async def test_a_killed_reader_process_is_replaced_and_nothing_is_lost_or_doubled(
    harness: Harness,
    driver: Driver,  # noqa: F811 (the fixture)
) -> None:
    parts = {"a": range(0, 300), "b": range(0, 200)}
    for part, seqs in parts.items():
        driver.produce(part, seqs)
    harness.quotas = {"ingest_rows_per_s": 150}  # slow enough to be killed mid-read
    await harness.start()
    assert await until(lambda: harness.view()["rows_in"] > 0), str(
        {k: harness.view()[k] for k in ("status", "reason", "last_error", "rows_in")}
    )
    [pid] = await until(reader_processes)
    os.kill(pid, signal.SIGKILL)
    assert await until(lambda: harness.rows() == expected(parts), 60), harness.view()
    assert await until(lambda: (r := reader_processes()) and r != [pid])
    assert await until(lambda: harness.view()["status"] == "running"), harness.view()


def out_of_order(h: Harness) -> dict[str, list[int]]:
    """The labels whose records are not in the log in the order they were produced."""
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in h.p.log.read(h.stream.topic, 0, 10**7):
        for p, seq in zip(e.batch.column("p").to_pylist(), e.batch.column("seq").to_pylist(),
                          strict=True):  # fmt: skip
            seqs[p].append(seq)
    return {p: s for p, s in seqs.items() if s != sorted(s)}


async def test_a_chunk_read_ahead_is_not_acknowledged_and_comes_once_in_order_after_a_kill(
    harness: Harness,
    driver: Driver,  # noqa: F811 (the fixture)
) -> None:
    """The server holds the first chunk (pushback) while the reader's process reads the
    next; that process is killed. Nothing was durable, so nothing may have been
    acknowledged; afterwards every record is in the log once, in order."""
    parts = {"a": range(0, 300), "b": range(0, 200)}  # several chunks of every kind
    for part, seqs in parts.items():
        driver.produce(part, seqs)
    harness.lag = 10**9
    await harness.start()
    view = await until(lambda: (v := harness.view())["status"] == "backing_off" and v)
    assert view and view["reason"].startswith("pushback"), harness.view()
    [pid] = await until(reader_processes)
    if driver.served() is not None:  # the counterpart shows the read ahead: exactly one
        assert await until(lambda: driver.served() == 2), driver.served()
    assert driver.acknowledged() in (0, None)
    os.kill(pid, signal.SIGKILL)
    assert await until(lambda: pid not in reader_processes())
    assert driver.acknowledged() in (0, None)  # (MQTT: the broker still holds every one)
    assert harness.p.log.end_offset(harness.stream.topic) == 0
    harness.lag = 0
    assert await until(lambda: harness.rows() == expected(parts), 60), harness.view()
    assert out_of_order(harness) == {}
    assert await until(lambda: harness.view()["status"] == "running"), harness.view()


async def test_every_durable_chunk_is_acknowledged_in_order_while_the_next_is_read_ahead(
    harness: Harness,
    driver: Driver,  # noqa: F811 (the fixture)
) -> None:
    """Reading ahead must not lose or reorder a ``done``: once every record is durable the
    counterpart has been told of each (and the stopped reader's process is gone)."""
    parts = {"a": range(0, 400), "b": range(0, 300)}
    for part, seqs in parts.items():
        driver.produce(part, seqs)
    await harness.start()
    assert await until(lambda: harness.rows() == expected(parts), 60), harness.view()
    assert out_of_order(harness) == {}
    total = expected(parts).total()
    view = await until(lambda: (v := harness.view())["rows_in"] == total and v)  # after done
    assert view and view["duplicates"] == 0, harness.view()
    if driver.kind == "nats":  # ack policy ``all``: its floor is the last chunk's end
        assert await until(lambda: driver.acknowledged() == total), driver.acknowledged()
    await harness.stop()
    assert await until(lambda: not reader_processes()), reader_processes()
    assert driver.acknowledged() in (total, None), driver.acknowledged()
