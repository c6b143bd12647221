"""The query pool: its own threads, a per-tenant share of them, and fair turns.

Ad-hoc queries run on ``threads`` threads of their own, never on the threads ingest
and the store's other reads use. A tenant may have at most ``per_tenant`` queries
admitted (running or waiting); one more is answered 429 ``too_many_queries`` with
``Retry-After``. The share is kept below the pool size, so one tenant's slow queries
always leave threads to the others; when every thread is busy, waiting queries get
the next free thread tenant by tenant in turn, not first come first served.

>>> import asyncio
>>> pool = QueryPool(threads=2, per_tenant=1)
>>> asyncio.run(pool.run("acme", lambda: 1 + 1))
2
>>> pool.close()
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from headwater.errors import RateLimited

T = TypeVar("T")


class QueryPool:
    def __init__(self, threads: int, per_tenant: int, retry_after_s: float = 1.0) -> None:
        self.threads = max(1, threads)
        # Below the pool size, so one tenant never holds every thread.
        self.per_tenant = max(1, min(per_tenant, self.threads - 1))
        self._retry_after_s = retry_after_s
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="hw-query")
        self._free = self.threads
        self._admitted: dict[str, int] = {}
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    async def run(self, tenant: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a pool thread for ``tenant``; 429 when the tenant has its share."""
        if self._admitted.get(tenant, 0) >= self.per_tenant:
            raise RateLimited(
                f"this tenant already runs {self.per_tenant} queries at once "
                "(setting query_concurrency_per_tenant); wait for one to finish and retry",
                code="too_many_queries",
                retry_after_s=self._retry_after_s,
            )
        self._admitted[tenant] = self._admitted.get(tenant, 0) + 1
        try:
            await self._take_thread(tenant)
        except BaseException:
            self._leave(tenant)
            raise
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn)
        # The thread and the share come back when the work ends, even if the caller
        # went away first (a thread cannot be stopped; the query's deadline ends it).
        future.add_done_callback(lambda _: self._finished(tenant))
        return await asyncio.shield(future)

    def _finished(self, tenant: str) -> None:
        self._give_thread()
        self._leave(tenant)

    def _leave(self, tenant: str) -> None:
        self._admitted[tenant] -= 1
        if not self._admitted[tenant]:
            del self._admitted[tenant]

    async def _take_thread(self, tenant: str) -> None:
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, deque()).append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._give_thread()  # handed a thread just as the caller went away
            else:
                self._forget(tenant, turn)
            raise

    def _give_thread(self) -> None:
        """A thread came free: the next tenant in turn gets it, else it goes back."""
        while self._waiting:
            tenant, turns = next(iter(self._waiting.items()))
            turn = turns.popleft()
            if turns:
                self._waiting.move_to_end(tenant)  # the others go first next time
            else:
                del self._waiting[tenant]
            if not turn.done():
                turn.set_result(None)
                return
        self._free += 1

    def _forget(self, tenant: str, turn: asyncio.Future[None]) -> None:
        turns = self._waiting.get(tenant)
        if turns is not None and turn in turns:
            turns.remove(turn)
            if not turns:
                del self._waiting[tenant]

    def running(self, tenant: str) -> int:
        """Queries admitted for ``tenant`` (running or waiting for a thread)."""
        return self._admitted.get(tenant, 0)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
