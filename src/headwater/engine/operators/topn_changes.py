"""Window Top-N with ``emit = 'changes'``: each open window's top rows, kept current.

The window aggregate below emits, after every batch, the groups the batch changed. This
operator keeps every aggregated row of the open windows (``rows``), re-ranks the
partitions those changes fall in (one DuckDB query, the ranking of
``headwater.engine.operators.topn``) and compares the result with the rows it showed
before (``shown``): only rows that differ are emitted, as upserts keyed by the
partition columns and the rank (``TopN.key``). A row that leaves the top N is thereby
replaced in the result table by the row that now holds its rank, and subscribers see
that upsert. The planner allows only what keeps each rank filled once it is filled
(``ROW_NUMBER``, a filter on the rank alone, no HAVING), so no result row ever has to
be deleted.

Rows of a window leave the state when the aggregate closes the window; the result
table then holds the window's final top N, the same rows ``emit = 'final'`` appends.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array, group_rows
from headwater.engine.compile import Compiled
from headwater.engine.operators.base import Operator, StepOutput, concat, last_per_key
from headwater.engine.operators.emit import select_keys
from headwater.engine.operators.query import BatchQuery
from headwater.engine.operators.topn import TopNRank, rank
from headwater.engine.plan import TopN, WindowSpec
from headwater.engine.state import pack, unpack


class TopNChanges:
    """Wraps the window aggregate (``emit = 'changes'``); state: its state, the open
    windows' aggregated rows and the top rows shown for them."""

    def __init__(
        self, inner: Operator, query: BatchQuery, top: TopN, window: WindowSpec,
        input_schema: pa.Schema, rows_schema: pa.Schema,
    ) -> None:  # fmt: skip
        self.inner = inner
        self.query = query
        self.top = top
        self.window = window
        self.input_schema = input_schema
        self.parts = [p.strip('"') for p in top.partition]
        self.ident = [*top.group, *self.parts]  # one aggregated row
        self.rows = rows_schema.empty_table()
        self.shown = query.schema.empty_table()

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        return self._rank(self.inner.process(batch, now_ms))

    def on_time(self, now_ms: int) -> StepOutput:
        return self._rank(self.inner.on_time(now_ms))

    def finish(self, now_ms: int) -> StepOutput:
        return self._rank(self.inner.finish(now_ms))

    def _rank(self, out: StepOutput) -> StepOutput:
        changed, errors = None, None
        if out.upserts is not None and out.upserts.num_rows:
            fresh = out.upserts.select(self.rows.schema.names).cast(self.rows.schema)
            self.rows = last_per_key(concat([self.rows, fresh]), self.ident)
            touched = select_keys(self.rows, fresh, self.parts)
            ranked, errors = rank(self.query, touched, self.input_schema)
            changed = self._differing(ranked)
            if changed.num_rows:
                self.shown = last_per_key(concat([self.shown, changed]), self.top.key)
        self._forget_closed()
        upserts = changed if changed is not None and changed.num_rows else None
        return StepOutput(upserts, None, out.late, concat([out.errors, errors]))

    def _differing(self, ranked: pa.Table) -> pa.Table:
        """The ranked rows not shown as they are now (every column compared)."""
        if not self.shown.num_rows or not ranked.num_rows:
            return ranked
        ranked = ranked.cast(self.shown.schema)
        n = self.shown.num_rows
        both = [
            pa.concat_arrays([as_array(self.shown[c]), as_array(ranked[c])])
            for c in ranked.schema.names
        ]
        ids = group_rows(both).ids
        return ranked.filter(pa.array(~np.isin(ids[n:], ids[:n])))

    def _forget_closed(self) -> None:
        closed = getattr(self.inner, "closed", None)
        if closed is None:
            return
        self.rows = self.rows.filter(
            pa.array(self._starts(self.rows[self.parts[self.top.window_at]]) > closed)
        )
        shown_window = self.shown[self.top.key[self.top.window_at]]
        self.shown = self.shown.filter(pa.array(self._starts(shown_window) > closed))

    def _starts(self, column: pa.ChunkedArray) -> np.ndarray:
        ms = np.asarray(as_array(column).cast(pa.int64()).to_numpy(zero_copy_only=False))
        return ms - self.window.size_ms if self.top.window_end else ms

    def snapshot(self) -> bytes:
        return pack({}, {"inner": pa.table({"state": pa.array([self.inner.snapshot()],
                                                              pa.large_binary())}),
                         "rows": self.rows, "shown": self.shown})  # fmt: skip

    def restore(self, data: bytes) -> None:
        _, tables = unpack(data)
        self.inner.restore(tables["inner"]["state"][0].as_py())
        self.rows = tables["rows"].cast(self.rows.schema)
        self.shown = tables["shown"].cast(self.shown.schema)

    def status(self) -> dict[str, Any]:
        out = dict(self.inner.status())
        out["state_rows"] = out.get("state_rows", 0) + self.rows.num_rows + self.shown.num_rows
        out["state_bytes"] = out.get("state_bytes", 0) + self.rows.nbytes + self.shown.nbytes
        return out


def top_n_stage(inner: Operator, compiled: Compiled, input_schema: pa.Schema) -> Operator:
    """The ranking around a windowed aggregate: once per closed window (``emit =
    'final'``, ``TopNRank``), or kept current while windows are open (``TopNChanges``)."""
    plan, query = compiled.plan, compiled.top_n
    assert plan.top_n is not None and isinstance(query, BatchQuery)
    if plan.options.emit == "final":
        return TopNRank(inner, query, input_schema)
    assert plan.window is not None and compiled.post is not None
    return TopNChanges(inner, query, plan.top_n, plan.window, input_schema, compiled.post.schema)
