"""The writing half of a pipeline runner: commits in order, on their own thread.

A runner processes a batch, hands the result to its ``Committer`` and goes on with the
next batch while the store writes (DuckDB releases the GIL while it does), so a
result waits for one store commit, not for a commit and the processing of a batch
behind it.

Commits reach the store in the order they were submitted. One commit may wait while
another is written; a commit submitted meanwhile is combined with the waiting one
(``combine``): the store then gets one transaction instead of two, and a slow store
makes commits bigger, not more numerous. A combined commit is what the two would have
written one after the other: later upserts of a key replace earlier ones, appends keep
their order, and the offsets and state are those of the later checkpoint. So a
checkpoint still writes its state, its offsets and every append since the previous
one in one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from headwater.engine import StepOutput

MAX_PENDING_ROWS = 500_000  # appended rows waiting for the store before the runner waits too


@dataclass(frozen=True, slots=True)
class Commit:
    """Rows to write; with an ``offset`` (and ``state``) it is a checkpoint."""

    out: StepOutput
    offset: int | None = None
    state: bytes | None = None
    started: float = 0.0  # when the cycle that made it began (time.perf_counter)
    positions: tuple[tuple[str, int], ...] = ()  # a checkpoint's offset of every input topic

    @property
    def checkpoint(self) -> bool:
        return self.offset is not None

    @property
    def appended_rows(self) -> int:
        tables = (self.out.appends, self.out.late, self.out.errors)
        return sum(t.num_rows for t in tables if t is not None)


def combine(first: Commit, then: Commit, key: Sequence[str]) -> Commit:
    """``first`` followed by ``then``, as one commit.

    >>> import pyarrow as pa
    >>> a = Commit(StepOutput(upserts=pa.table({"k": ["x"], "n": [1]})), offset=10, state=b"s1")
    >>> b = Commit(StepOutput(upserts=pa.table({"k": ["x"], "n": [2]})))
    >>> c = combine(a, b, ["k"])
    >>> c.out.upserts.to_pylist(), c.offset, c.state
    ([{'k': 'x', 'n': 2}], 10, b's1')
    """
    last = then if then.checkpoint else first
    out = first.out.then(then.out, key)
    return Commit(out, last.offset, last.state, then.started, last.positions)


class CommitFailed(RuntimeError):
    """The store refused a commit; the pipeline stops (it resumes from its last checkpoint)."""


class Committer:
    """Writes a pipeline's commits in order on ``writers`` (shared by every pipeline; one
    write of this pipeline at a time), or on a thread of its own when none is given."""

    def __init__(
        self,
        name: str,
        key: Sequence[str],
        write: Callable[[Commit], None],
        writers: Executor | None = None,
    ) -> None:
        self._key = tuple(key)
        self._write = write
        self._cond = threading.Condition()
        self._pending: Commit | None = None
        self._busy = False  # a write task is queued or running
        self._closed = False
        self._error: BaseException | None = None
        self._own = writers is None
        self._writers = writers or ThreadPoolExecutor(1, thread_name_prefix=f"commit-{name}")

    def submit(self, commit: Commit) -> None:
        """Queue ``commit`` after the ones before it; raise if an earlier one failed.

        Waits only while appended rows pile up past ``MAX_PENDING_ROWS`` (a store
        slower than the pipeline then slows the pipeline, not the memory).
        """
        with self._cond:
            self._raise_locked()
            while (
                self._pending is not None
                and self._pending.appended_rows + commit.appended_rows > MAX_PENDING_ROWS
            ):
                self._cond.wait()
                self._raise_locked()
            pending = self._pending
            self._pending = commit if pending is None else combine(pending, commit, self._key)
            self._cond.notify_all()
            if not self._busy:
                self._busy = True
                self._writers.submit(self._run)

    def check(self) -> None:
        """Raise ``CommitFailed`` if a commit failed."""
        with self._cond:
            self._raise_locked()

    def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every submitted commit is written (or one failed: raise)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._error is not None or (self._pending is None and not self._busy),
                timeout_s,
            )
            self._raise_locked()

    def close(self) -> None:
        """Return once the commits submitted so far are written (or one failed)."""
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: not self._busy, 30)
        if self._own:
            self._writers.shutdown(wait=False)

    def _raise_locked(self) -> None:
        if self._error is not None:
            raise CommitFailed(f"{type(self._error).__name__}: {self._error}") from self._error

    def _run(self) -> None:
        """Write what is pending until nothing is (on a writer thread)."""
        while True:
            with self._cond:
                if self._pending is None or self._error is not None:
                    self._busy = False
                    self._cond.notify_all()
                    return
                commit, self._pending = self._pending, None
                self._cond.notify_all()
            try:
                self._write(commit)
            except BaseException as exc:  # handed to the runner, which fails the pipeline
                with self._cond:
                    self._error = exc
