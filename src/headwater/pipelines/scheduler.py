"""Pipelines share a fixed pool of threads: the scheduler runs their cycles in turn.

A runner is a step function, not a thread: ``cycle()`` reads what its topic holds,
processes it, hands commits to its committer, and says when it wants to run again (at
once when the log held more, or after its flush gap or idle wait). ``threads`` workers
take runners that are due, or whose topic grew, one cycle at a time; a runner never runs
on two workers at once. Idle workers sleep on the log until any runner's topic grows.
The commits go to a shared pool of ``commit_threads`` writers, in order per pipeline
(``Committer``). So a server runs ``threads + commit_threads`` pipeline threads whatever
the number of pipelines.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import structlog

from headwater.log.ports import Log

log = structlog.get_logger("headwater.pipeline")

IDLE_WAIT_S = 0.05  # longest a worker sleeps without looking at new or stopping tasks


class Task(Protocol):
    @property
    def name(self) -> str: ...

    def positions(self) -> dict[str, int]:
        """Where the task reads next, per log topic it reads."""
        ...

    def cycle(self) -> float | None:
        """Run once; seconds until it wants to run again (0: at once), None when done."""
        ...


class Scheduler:
    def __init__(self, log_: Log, threads: int = 2, commit_threads: int = 2) -> None:
        self._log = log_
        self._lock = threading.Condition()
        self._tasks: dict[int, Task] = {}
        self._due: dict[int, float] = {}  # task -> monotonic time it asked to run at
        self._busy: set[int] = set()
        self._closed = False
        self.commits = ThreadPoolExecutor(commit_threads, thread_name_prefix="pipeline-commit")
        self._workers = [
            threading.Thread(target=self._work, name=f"pipeline-worker-{i}", daemon=True)
            for i in range(threads)
        ]
        for w in self._workers:
            w.start()

    def add(self, task: Task) -> None:
        with self._lock:
            self._tasks[id(task)] = task
            self._due[id(task)] = 0.0
            self._lock.notify_all()

    def wake(self, task: Task) -> None:
        """Run ``task`` as soon as a worker is free (it was asked to stop, say)."""
        with self._lock:
            if id(task) in self._tasks:
                self._due[id(task)] = 0.0
                self._lock.notify_all()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for w in self._workers:
            w.join(timeout=30)
        self.commits.shutdown(wait=True)

    def _work(self) -> None:
        while True:
            task = self._take()
            if task is None:
                return
            try:
                again = task.cycle()
            except BaseException:  # a runner handles its own failures; this is a bug
                log.exception("pipeline_cycle_crashed", pipeline=task.name)
                again = None
            with self._lock:
                self._busy.discard(id(task))
                if again is None:
                    self._tasks.pop(id(task), None)
                    self._due.pop(id(task), None)
                else:
                    self._due[id(task)] = time.monotonic() + again
                self._lock.notify_all()

    def _take(self) -> Task | None:
        """The next task that is due or whose topic grew; waits for one."""
        while True:
            with self._lock:
                if self._closed:
                    return None
                now = time.monotonic()
                idle = {k: t for k, t in self._tasks.items() if k not in self._busy}
                ready = [k for k in idle if self._due[k] <= now]
                if not ready:  # the log may have grown under a waiting task
                    ready = [k for k, t in idle.items() if self._grew(t)]
                if ready:
                    key = min(ready, key=self._due.__getitem__)
                    self._busy.add(key)
                    return self._tasks[key]
                nearest = min((self._due[k] for k in idle), default=now + IDLE_WAIT_S)
                positions: dict[str, int] = {}
                for t in idle.values():
                    for topic, at in t.positions().items():
                        positions[topic] = min(at, positions.get(topic, at))
                timeout = max(0.0, min(nearest - now, IDLE_WAIT_S))
                if not positions:
                    self._lock.wait(timeout)
                    continue
            # Outside our lock: the log wakes us when any waiting task's topic grows.
            self._log.wait_any_blocking(positions, timeout)

    def _grew(self, task: Task) -> bool:
        return any(self._log.end_offset(t) > at for t, at in task.positions().items())
