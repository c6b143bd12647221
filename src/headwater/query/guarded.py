"""Run one checked SELECT on a DuckDB cursor inside its ``QueryBudget``.

A watcher thread polls the clock and the process's resident memory every few
milliseconds and calls ``cursor.interrupt()`` (DuckDB's own cancellation point) when
the deadline passes or the server has grown by more than the query's memory cap since
the query began. Answers stream batch by batch: rows stop at ``max_rows + 1`` and bytes
are counted as they arrive, so an answer over ``query_max_answer_bytes`` is refused
before it is built. ``encode_answer`` renders the JSON answer under the same caps.

The memory cap is on the process's growth while the query runs (DuckDB's own
``memory_limit`` covers only its buffer manager, not the vectors a function builds),
so two heavy queries at once share it: either may be the one stopped.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import pyarrow as pa

from headwater.errors import QueryError
from headwater.query.limits import QueryBudget
from headwater.query.values import value_too_large

BATCH_ROWS = 8192
POLL_S = 0.005
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Resident memory of this process, from ``/proc/self/statm`` (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


class _Watch:
    """Interrupts ``cursor`` at the deadline or past the memory cap, whichever comes first."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, budget: QueryBudget) -> None:
        self._cursor = cursor
        self._budget = budget
        self._base = rss_bytes()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.reason: str | None = None  # "timeout" or "memory" once it fired
        self._thread = threading.Thread(target=self._run, name="hw-query-watch", daemon=True)

    def __enter__(self) -> _Watch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        # Under the lock, so the watcher never interrupts a cursor the caller reuses.
        with self._lock:
            self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            if self._budget.remaining() <= 0:
                reason = "timeout"
            elif self._base and rss_bytes() - self._base > self._budget.limits.memory_bytes:
                reason = "memory"
            else:
                continue
            with self._lock:
                if not self._stop.is_set():
                    self.reason = reason
                    self._cursor.interrupt()
            return

    def check(self) -> None:
        if self.reason is not None:
            raise self.error()

    def error(self) -> QueryError:
        if self.reason == "memory":
            return out_of_memory(self._budget)
        return self._budget.timeout_error()


def out_of_memory(budget: QueryBudget) -> QueryError:
    cap = budget.limits.memory_bytes
    return QueryError(
        f"the query needed more than {cap / 1024**2:,.0f} MiB of memory (setting query_memory_limit) "
        "and was stopped; filter or aggregate more, narrow the time range, or add a LIMIT",
        code="query_out_of_memory",
    )


def answer_too_large(budget: QueryBudget) -> QueryError:
    cap = budget.limits.max_answer_bytes
    return QueryError(
        f"the answer is larger than {cap / 1024**2:,.0f} MiB (setting query_max_answer_bytes); "
        "select fewer columns or rows, aggregate, or page with LIMIT/OFFSET",
        code="answer_too_large",
    )


def fetch(
    cursor: duckdb.DuckDBPyConnection,
    sql: str,
    budget: QueryBudget,
    *,
    max_rows: int,
    clean: Callable[[str], str] = str,
) -> tuple[pa.Table, bool]:
    """At most ``max_rows`` rows of ``sql`` and whether more existed, within ``budget``."""
    batches: list[pa.RecordBatch] = []
    rows = size = 0
    budget.check_time()
    watch = _Watch(cursor, budget)
    try:
        with watch:
            reader = cursor.sql(sql).to_arrow_reader(BATCH_ROWS)
            try:  # closed on every path: the cursor refuses new statements while it is open
                schema = reader.schema
                for batch in reader:
                    watch.check()
                    batches.append(batch)
                    rows += batch.num_rows
                    size += batch.nbytes
                    if size > budget.limits.max_answer_bytes:
                        raise answer_too_large(budget)
                    if rows > max_rows:
                        break
            finally:
                reader.close()
        watch.check()
    except duckdb.InterruptException as exc:
        raise watch.error() from exc
    except duckdb.OutOfMemoryException as exc:
        raise out_of_memory(budget) from exc
    except duckdb.Error as exc:
        if watch.reason is not None:
            raise watch.error() from exc
        raise value_too_large(str(exc)) or QueryError(clean(str(exc)), code="query_error") from exc
    table = pa.Table.from_batches(batches, schema=schema)
    return table.slice(0, max_rows), rows > max_rows


def encode_answer(
    table: pa.Table,
    truncated: bool,
    budget: QueryBudget,
    dumps: Callable[[Any], bytes],
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """``{"columns": [...], "rows": [[...]], "truncated": b, **extra}`` as JSON, within ``budget``.

    Rows are rendered column-wise batch by batch (duplicate column names must not
    collapse), so at most one batch of Python values exists at a time. ``dumps`` is the
    JSON encoder of the HTTP layer.
    """
    cap = budget.limits.max_answer_bytes
    parts = [b'{"columns":', dumps(table.column_names), b',"rows":[']
    size = sum(map(len, parts))
    for batch in table.to_batches(BATCH_ROWS):
        budget.check_time()
        columns = [column.to_pylist() for column in batch.columns]
        text = dumps(list(zip(*columns, strict=True)))
        size += len(text)
        if size > cap:
            raise answer_too_large(budget)
        if len(text) > 2:  # "[]": an empty batch
            parts.append((b"," if len(parts) > 3 else b"") + text[1:-1])
    parts.append(b'],"truncated":' + (b"true" if truncated else b"false"))
    for key, value in (extra or {}).items():
        parts.append(b"," + dumps(key) + b":" + dumps(value))
    parts.append(b"}")
    return b"".join(parts)


def names_cleaner(names: Mapping[str, str]) -> Callable[[str], str]:
    """A message cleaner that speaks of the user's table names, not the physical ones."""

    def clean(message: str) -> str:
        for physical in sorted(names, key=len, reverse=True):  # "_cte#10" before "_cte#1"
            message = message.replace(physical, names[physical])
        return message

    return clean
