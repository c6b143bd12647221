"""Tumbling and hopping window aggregation (and GROUP BY without a window, emit='changes').

Per batch: evaluate keys and arguments (one query), drop rows for closed windows into
``late``, aggregate the rest into a *partial* state per (key, pane) with vectorized
kernels, and file each pane's partial under that pane. Partials of a pane are merged
lazily (when a window closes, when changes are emitted, or every 16 partials), so
the cost per batch is one group-by over the batch, not over the state.

- emit='final': when the watermark closes a window (see ``headwater.engine.windows``),
  its panes are merged and its rows emitted once, as upserts.
- emit='changes': after every batch, the groups the batch touched are emitted with
  their current values, as upserts keyed by the group keys and ``window_start``.
  Closed windows are dropped from state.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.compile import Compiled
from headwater.engine.operators.base import (
    Counters,
    StepOutput,
    concat,
    error_rows,
    event_ms,
    late_rows,
)
from headwater.engine.operators.emit import project, select_keys, with_window
from headwater.engine.operators.query import ROW, conform
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark
from headwater.engine.windows import (
    assign,
    closed_through,
    floor_to,
    late_windows,
    open_rows,
    pane_width,
    windows_to_close,
)

PANE = "_pane"
MAX_PARTS = 16


class WindowAggregate:
    def __init__(self, compiled: Compiled) -> None:
        assert compiled.aggregation is not None
        plan = compiled.plan
        self.c = compiled
        self.agg = compiled.aggregation
        self.spec = plan.window
        self.emit = plan.options.emit
        self.lateness = plan.options.allowed_lateness_ms
        self.keys = list(compiled.key_fields)
        self.key_names = [f.name for f in self.keys]
        self.by = [*self.keys, pa.field(PANE, pa.int64())]
        self.width = pane_width(self.spec) if self.spec is not None else 1
        self.watermark = Watermark(plan.options.watermark_delay_ms, plan.options.idle_timeout_ms)
        self.panes: dict[int, list[pa.Table]] = {}
        self.closed: int | None = None  # start of the last window closed
        self.counters = Counters()

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.c.input_schema)
        n = batch.num_rows
        errors: list[pa.Table | None] = []
        ts = np.zeros(n, dtype=np.int64)
        if self.spec is not None:
            ts, valid = event_ms(batch[self.spec.time_column])
            if not valid.all():
                bad = np.flatnonzero(~valid)
                message = f"event time {self.spec.time_column} is NULL"
                errors.append(error_rows(batch, bad, [message] * len(bad)))
                batch, ts = batch.filter(pa.array(valid)), ts[valid]
        indexed = batch.append_column(ROW, pa.array(np.arange(batch.num_rows, dtype=np.int64)))
        result = self.c.rows.run(indexed)
        errors.append(
            error_rows(batch, result.failed, result.messages) if len(result.failed) else None
        )
        rows, late = self._split_late(result.rows, batch, ts)
        partial = self.agg.partial(rows, self.by)
        touched = self._add(partial)
        if len(ts) and self.spec is not None:
            self.watermark = self.watermark.observe(int(ts.max()), now_ms)
        changes = self._changes(touched) if self.emit == "changes" else None
        return self._emit(concat([changes, self._close()]), late, concat(errors), n)

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        return self._emit(self._close(), None, None, 0)

    def finish(self, now_ms: int) -> StepOutput:
        """End of input: close every window."""
        if self.spec is not None:
            self.watermark = self.watermark.finish()
        return self._emit(self._close(), None, None, 0)

    def _emit(
        self, aggregated: pa.Table | None, late: pa.Table | None, errors: pa.Table | None, n: int
    ) -> StepOutput:
        upserts, failed = project(self.c, aggregated)
        return self.counters.count(StepOutput(upserts, None, late, concat([errors, failed])), n)

    def _split_late(
        self, rows: pa.Table, batch: pa.Table, ts: np.ndarray
    ) -> tuple[pa.Table, pa.Table | None]:
        """Rows with an open window (with their ``_pane``), and rows late for a window."""
        if self.spec is None:
            return rows.append_column(PANE, pa.array(np.zeros(rows.num_rows, np.int64))), None
        index = rows["_row"].to_numpy()
        row_ts = ts[index]
        wm = self.watermark.watermark_ms
        late_idx, late_starts = late_windows(row_ts, self.spec, wm, self.lateness)
        late = (
            late_rows(batch, index[late_idx], late_starts, "window_closed")
            if len(late_idx)
            else None
        )
        rows = rows.append_column(PANE, pa.array(floor_to(row_ts, self.width)))
        keep = open_rows(row_ts, self.spec, wm, self.lateness)
        return (rows if keep.all() else rows.filter(pa.array(keep))), late

    def _add(self, partial: pa.Table) -> dict[int, pa.Table]:
        """File a batch's partial state under its panes; return the part of each pane."""
        if partial.num_rows == 0:
            return {}
        panes = partial[PANE].to_numpy()
        order = np.argsort(panes, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(panes[order]) != 0, True])
        if len(bounds) == 2:
            parts = {int(panes[0]): partial}
        else:
            ordered = partial.take(pa.array(order))
            parts = {
                int(panes[order[a]]): ordered.slice(a, b - a) for a, b in itertools.pairwise(bounds)
            }
        for pane, part in parts.items():
            held = self.panes.setdefault(pane, [])
            held.append(part)
            if len(held) >= MAX_PARTS:
                self.panes[pane] = [self.agg.merge(held, self.by)]
        return parts

    def _pane_state(self, pane: int) -> pa.Table:
        held = self.panes[pane]
        if len(held) > 1:
            self.panes[pane] = held = [self.agg.merge(held, self.by)]
        return held[0]

    def _window(self, start: int, probe: pa.Table | None = None) -> pa.Table:
        """The aggregated rows of one window (only the groups in ``probe``, if given)."""
        spec = self.spec
        size = spec.size_ms if spec is not None else 0
        panes = [p for p in self.panes if spec is None or start <= p < start + size]
        parts = [self._pane_state(p) for p in panes]
        if probe is not None:
            parts = [select_keys(t, probe, self.key_names) for t in parts]
        merged = self.agg.merge(parts, self.keys)
        table = self.agg.final(merged, self.key_names)
        if spec is None:
            return table
        starts = np.full(table.num_rows, start, dtype=np.int64)
        return with_window(table, starts, starts + size, len(self.keys))

    def _changes(self, touched: dict[int, pa.Table]) -> pa.Table | None:
        if not touched:
            return None
        if self.spec is None:
            return self._pane_changes(0, touched[0])
        panes = np.array(sorted(touched), dtype=np.int64)
        _, starts = assign(panes, self.spec)
        after = self.closed if self.closed is not None else -(2**62)
        tables = []
        whole = self.spec.size_ms == self.width  # a window is one pane (tumble)
        for start in np.unique(starts[starts > after]).tolist():
            if whole:
                tables.append(self._pane_changes(start, touched[start]))
                continue
            inside = [t for p, t in touched.items() if start <= p < start + self.spec.size_ms]
            tables.append(self._window(start, pa.concat_tables(inside)))
        return concat(tables)

    def _pane_changes(self, pane: int, part: pa.Table) -> pa.Table:
        """The window of one pane, only the groups ``part`` (just added to it) touched.

        The pane's parts are merged once, and the merge tells which of its rows the new
        part went into: one pass over the pane's state per batch, not three.
        """
        held = self.panes[pane]
        if held[-1] is not part:  # merged into the pane already (``MAX_PARTS``)
            return self._window(pane, part)
        merged, rows = self.agg.merge_groups(held, self.by)
        self.panes[pane] = [merged]
        picked = np.unique(rows[len(rows) - part.num_rows :])
        changed = merged.take(pa.array(picked)) if len(picked) < merged.num_rows else merged
        table = self.agg.final(changed, self.key_names)
        if self.spec is None:
            return table
        starts = np.full(table.num_rows, pane, dtype=np.int64)
        return with_window(table, starts, starts + self.spec.size_ms, len(self.keys))

    def _close(self) -> pa.Table | None:
        if self.spec is None:
            return None
        top = closed_through(self.spec, self.watermark.watermark_ms, self.lateness)
        if self.closed is not None and top <= self.closed:
            return None
        result = None
        if self.emit == "final":
            panes = np.array(sorted(self.panes), dtype=np.int64)
            starts = windows_to_close(
                panes, self.spec, self.watermark.watermark_ms, self.lateness, self.closed
            )
            result = concat([self._window(int(s)) for s in starts])
        self.closed = top
        for pane in [
            p for p in self.panes if floor_to(np.array([p]), self.spec.slide_ms)[0] <= top
        ]:
            del self.panes[pane]
        return result

    def snapshot(self) -> bytes:
        state = [self._pane_state(p) for p in sorted(self.panes)]
        table = pa.concat_tables(state) if state else self.agg.schema(self.by).empty_table()
        meta = {
            "watermark": self.watermark.to_dict(),
            "closed": self.closed,
            "counters": self.counters.to_dict(),
        }
        return pack(meta, {"panes": table})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.closed = meta["closed"]
        self.counters = Counters()
        self.counters.load(meta["counters"])
        table = self.agg.conform(tables["panes"], self.agg.schema(self.by))
        panes = table[PANE].to_numpy()
        self.panes = {int(p): [table.filter(pa.array(panes == p))] for p in np.unique(panes)}

    def status(self) -> dict[str, Any]:
        held = [t for parts in self.panes.values() for t in parts]
        ends = None
        if self.spec is not None and self.panes:
            _, starts = assign(np.array(sorted(self.panes), dtype=np.int64), self.spec)
            open_starts = starts[starts > (self.closed if self.closed is not None else -(2**62))]
            ends = open_starts + self.spec.size_ms
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "open_windows": len(np.unique(ends)) if ends is not None else 0,
            "oldest_open_window_end_ms": int(ends.min())
            if ends is not None and len(ends)
            else None,
            "state_rows": sum(t.num_rows for t in held),
            "state_bytes": sum(t.get_total_buffer_size() for t in held),  # nbytes walks slices
            **self.counters.to_dict(),
        }
