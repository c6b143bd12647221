"""The source contract again, each source's reader in a process of its own
(``source_processes``): the same real counterparts, the same checks."""

from __future__ import annotations

import os
import signal
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
