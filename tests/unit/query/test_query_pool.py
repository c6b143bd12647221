"""The query pool: a tenant's share, 429 beyond it, and fair turns for free threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from headwater.errors import RateLimited
from headwater.query.pool import QueryPool


def gated(started: list[str], name: str, gate: threading.Event) -> Callable[[], str]:
    def work() -> str:
        started.append(name)
        assert gate.wait(10)
        return name

    return work


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


def test_a_tenants_share_stays_below_the_pool_size() -> None:
    assert QueryPool(threads=8, per_tenant=4).per_tenant == 4
    assert QueryPool(threads=4, per_tenant=9).per_tenant == 3
    assert QueryPool(threads=1, per_tenant=4).per_tenant == 1


async def test_one_query_over_the_share_is_429_and_others_still_run() -> None:
    pool = QueryPool(threads=3, per_tenant=2)
    gate, started = threading.Event(), []
    busy = [asyncio.create_task(pool.run("a", gated(started, f"a{i}", gate))) for i in range(2)]
    await until(lambda: len(started) == 2)
    with pytest.raises(RateLimited) as err:
        await pool.run("a", lambda: "never")
    assert err.value.code == "too_many_queries" and err.value.retry_after_s > 0
    assert await pool.run("b", lambda: "b ran") == "b ran"  # while a's two still run
    assert not any(task.done() for task in busy)
    gate.set()
    assert sorted(await asyncio.gather(*busy)) == ["a0", "a1"]
    assert pool.running("a") == 0
    pool.close()


async def test_waiting_tenants_take_turns_for_free_threads() -> None:
    pool = QueryPool(threads=3, per_tenant=2)
    gates = {name: threading.Event() for name in ("a0", "a1", "b0", "c0", "c1", "d0")}
    started: list[str] = []
    running = [asyncio.create_task(pool.run(n[0], gated(started, n, gates[n]))) for n in ("a0", "a1", "b0")]  # fmt: skip
    await until(lambda: len(started) == 3)
    waiting = []
    for name, admitted in (("c0", 1), ("c1", 2), ("d0", 1)):  # c asks twice before d asks once
        waiting.append(asyncio.create_task(pool.run(name[0], gated(started, name, gates[name]))))
        await until(lambda t=name[0], n=admitted: pool.running(t) == n)  # type: ignore[misc]
    for name in ("a0", "a1"):
        gates[name].set()
    await until(lambda: len(started) == 5)
    assert started[3:] == ["c0", "d0"]  # d's turn comes before c's second query
    for gate in gates.values():
        gate.set()
    await asyncio.gather(*running, *waiting)
    assert started[5:] == ["c1"]
    pool.close()


async def test_a_caller_that_leaves_while_waiting_costs_no_thread() -> None:
    pool = QueryPool(threads=2, per_tenant=1)
    gate, started = threading.Event(), []
    first = asyncio.create_task(pool.run("a", gated(started, "a", gate)))
    second = asyncio.create_task(pool.run("b", gated(started, "b", gate)))
    await until(lambda: len(started) == 2)
    leaving = asyncio.create_task(pool.run("c", lambda: "never"))
    await until(lambda: pool.running("c") == 1)
    leaving.cancel()
    gate.set()
    await asyncio.gather(first, second)
    assert pool.running("c") == 0
    # both threads are free again: two queries run side by side
    again, later = threading.Event(), []
    both = [asyncio.create_task(pool.run(t, gated(later, t, again))) for t in ("d", "e")]
    await until(lambda: len(later) == 2)
    again.set()
    assert sorted(await asyncio.gather(*both)) == ["d", "e"]
    pool.close()
