"""The operator contract and what a step produces.

Every operator takes a micro-batch (``process``) or the passing of processing time
(``on_time``), and answers with a ``StepOutput``:

- ``upserts``: result rows that replace rows with the same key (aggregations);
- ``appends``: result rows to add (stateless pipelines, dedup);
- ``late``: input rows that arrived after their window closed, with ``_window_start``
  (NULL for sessions and dedup) and ``_reason``;
- ``errors``: input rows an expression failed on, with ``_error`` (DuckDB's message).

A runner commits all four, the operator's ``snapshot()`` and the log offsets in one
transaction; after a crash it ``restore()``s the snapshot and replays from the offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.aggregates.groups import group_rows
from headwater.engine.plan import WINDOW_TYPE

I64 = npt.NDArray[np.int64]
LATE_COLUMNS = [pa.field("_window_start", WINDOW_TYPE), pa.field("_reason", pa.string())]
ERROR_COLUMNS = [pa.field("_error", pa.string())]


@dataclass(frozen=True, slots=True)
class StepOutput:
    upserts: pa.Table | None = None
    appends: pa.Table | None = None
    late: pa.Table | None = None
    errors: pa.Table | None = None

    def then(self, other: StepOutput, key: Sequence[str] = ()) -> StepOutput:
        """This step followed by ``other``, as one step (e.g. to commit several at once).

        With ``key`` (the pipeline's ``output_key``), an upsert of ``other`` replaces one
        of this step with the same key, so the combined upserts hold each key once.
        """
        upserts = concat([self.upserts, other.upserts])
        if key and upserts is not None and self.upserts is not None and self.upserts.num_rows:
            upserts = last_per_key(upserts, key)
        return StepOutput(
            upserts=upserts,
            appends=concat([self.appends, other.appends]),
            late=concat([self.late, other.late]),
            errors=concat([self.errors, other.errors]),
        )


class Operator(Protocol):
    def process(self, batch: pa.Table, now_ms: int) -> StepOutput: ...

    def on_time(self, now_ms: int) -> StepOutput: ...

    def finish(self, now_ms: int) -> StepOutput: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class Counters:
    rows_in: int = 0
    rows_out: int = 0
    late_rows: int = 0
    error_rows: int = 0
    dropped_duplicates: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def count(self, out: StepOutput, rows_in: int) -> StepOutput:
        self.rows_in += rows_in
        for table in (out.upserts, out.appends):
            self.rows_out += table.num_rows if table is not None else 0
        self.late_rows += out.late.num_rows if out.late is not None else 0
        self.errors_seen(out.errors)
        return out

    def errors_seen(self, errors: pa.Table | None) -> None:
        self.error_rows += errors.num_rows if errors is not None else 0

    def to_dict(self) -> dict[str, int]:
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "late_rows": self.late_rows,
            "error_rows": self.error_rows,
            "dropped_duplicates": self.dropped_duplicates,
        }

    def load(self, data: dict[str, int]) -> None:
        for key, value in data.items():
            if hasattr(self, key):
                setattr(self, key, int(value))


def concat(tables: list[pa.Table | None]) -> pa.Table | None:
    present = [t for t in tables if t is not None and t.num_rows]
    if not present:
        return next((t for t in tables if t is not None), None)
    return present[0] if len(present) == 1 else pa.concat_tables(present)


def last_per_key(table: pa.Table, key: Sequence[str]) -> pa.Table:
    """The last row of each key, in the order of those last rows."""
    groups = group_rows([table[k] for k in key], table.num_rows)
    if groups.count == table.num_rows:
        return table
    last = np.full(groups.count, -1, dtype=np.int64)
    np.maximum.at(last, groups.ids, np.arange(table.num_rows, dtype=np.int64))
    return table.take(pa.array(np.sort(last)))


def late_schema(input_schema: pa.Schema) -> pa.Schema:
    return pa.schema([*input_schema, *LATE_COLUMNS])


def error_schema(input_schema: pa.Schema) -> pa.Schema:
    return pa.schema([*input_schema, *ERROR_COLUMNS])


def late_rows(batch: pa.Table, rows: I64, window_starts: I64 | None, reason: str) -> pa.Table:
    """Input rows ``rows`` of ``batch`` (with repeats), marked late."""
    picked = batch.take(pa.array(rows, pa.int64()))
    starts = (
        pa.nulls(len(rows), WINDOW_TYPE)
        if window_starts is None
        else pa.array(window_starts, pa.int64()).cast(WINDOW_TYPE)
    )
    picked = picked.append_column(LATE_COLUMNS[0], starts)
    return picked.append_column(LATE_COLUMNS[1], pa.array([reason] * len(rows), pa.string()))


def error_rows(batch: pa.Table, rows: I64, messages: list[str]) -> pa.Table:
    picked = batch.take(pa.array(rows, pa.int64()))
    return picked.append_column(ERROR_COLUMNS[0], pa.array(messages, pa.string()))


def event_ms(column: pa.Array | pa.ChunkedArray) -> tuple[I64, npt.NDArray[np.bool_]]:
    """Event times as int64 ms (timestamps of any unit, or integers taken as ms) + validity."""
    t = column.type
    if pa.types.is_timestamp(t):
        column = pc.cast(column, pa.timestamp("ms", tz=t.tz), safe=False)
        column = pc.cast(column, pa.int64())
    elif not pa.types.is_integer(t):
        raise TypeError(f"event time must be a timestamp or integer ms column, not {t}")
    valid = np.ones(len(column), dtype=bool)
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        column = pc.fill_null(column, 0)
    return np.asarray(column.to_numpy(), dtype=np.int64), valid
