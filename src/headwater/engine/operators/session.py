"""Session windows: per key, rows at most ``gap`` apart in event time share a session.

State is one table of open sessions: keys, ``_start`` / ``_end`` (first and last event
time, ms) and the aggregate states. Per batch, the batch's rows and the open sessions
are treated as intervals and merged with ``windows.sessionize`` (so a row between two
sessions bridges them into one); the batch's rows are aggregated per resulting session
and merged with the sessions' states, all vectorized. A session closes, and is emitted
once, when ``_end + gap + allowed_lateness < watermark`` (a row at ``_end + gap`` would
still join it: Flink's rule, see ``windows.sessionize``); its ``window_end`` is
``_end + gap``. A row is late iff ``ts < watermark - allowed_lateness``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array, group_rows
from headwater.engine.compile import Compiled
from headwater.engine.operators.base import (
    Counters,
    StepOutput,
    concat,
    error_rows,
    event_ms,
    late_rows,
)
from headwater.engine.operators.emit import project, with_window
from headwater.engine.operators.query import ROW, conform
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark
from headwater.engine.windows import session_late, sessionize

START, END, SID = "_start", "_end", "_sid"


class SessionAggregate:
    def __init__(self, compiled: Compiled) -> None:
        plan = compiled.plan
        assert compiled.aggregation is not None and plan.window is not None
        self.c = compiled
        self.agg = compiled.aggregation
        self.gap = plan.window.gap_ms
        self.time_column = plan.window.time_column
        self.lateness = plan.options.allowed_lateness_ms
        self.keys = list(compiled.key_fields)
        self.key_names = [f.name for f in self.keys]
        self.by = [*self.keys, pa.field(SID, pa.int64())]
        bounds = [pa.field(START, pa.int64()), pa.field(END, pa.int64())]
        self.open_schema = pa.schema([*self.keys, *bounds, *self.agg.state_fields])
        self.open = self.open_schema.empty_table()
        self.watermark = Watermark(plan.options.watermark_delay_ms, plan.options.idle_timeout_ms)
        self.counters = Counters()

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.c.input_schema)
        n = batch.num_rows
        errors: list[pa.Table | None] = []
        ts, valid = event_ms(batch[self.time_column])
        if not valid.all():
            bad = np.flatnonzero(~valid)
            message = f"event time {self.time_column} is NULL"
            errors.append(error_rows(batch, bad, [message] * len(bad)))
            batch, ts = batch.filter(pa.array(valid)), ts[valid]
        indexed = batch.append_column(ROW, pa.array(np.arange(batch.num_rows, dtype=np.int64)))
        result = self.c.rows.run(indexed)
        errors.append(
            error_rows(batch, result.failed, result.messages) if len(result.failed) else None
        )
        rows = result.rows
        index = rows["_row"].to_numpy()
        row_ts = ts[index]
        is_late = session_late(row_ts, self.watermark.watermark_ms, self.lateness)
        late = None
        if is_late.any():
            late = late_rows(batch, index[is_late], None, "behind_watermark")
            rows, row_ts = rows.filter(pa.array(~is_late)), row_ts[~is_late]
        self._merge(rows, row_ts)
        if len(ts):
            self.watermark = self.watermark.observe(int(ts.max()), now_ms)
        return self._emit(self._close(), late, concat(errors), n)

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        return self._emit(self._close(), None, None, 0)

    def finish(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.finish()
        return self._emit(self._close(), None, None, 0)

    def _emit(
        self, aggregated: pa.Table | None, late: pa.Table | None, errors: pa.Table | None, n: int
    ) -> StepOutput:
        upserts, failed = project(self.c, aggregated)
        return self.counters.count(StepOutput(upserts, None, late, concat([errors, failed])), n)

    def _merge(self, rows: pa.Table, row_ts: np.ndarray) -> None:
        if rows.num_rows == 0:
            return
        old = self.open
        n_old = old.num_rows
        keys = [pa.concat_arrays([as_array(old[k]), as_array(rows[k])]) for k in self.key_names]
        gids = group_rows(keys, n_old + rows.num_rows).ids
        starts = np.concatenate([old[START].to_numpy(), row_ts]).astype(np.int64)
        ends = np.concatenate([old[END].to_numpy(), row_ts]).astype(np.int64)
        sid, count = sessionize(gids, starts, ends, self.gap)
        first = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        last = np.full(count, np.iinfo(np.int64).min, dtype=np.int64)
        np.minimum.at(first, sid, starts)
        np.maximum.at(last, sid, ends)
        fresh = self.agg.partial(rows.append_column(SID, pa.array(sid[n_old:])), self.by)
        held = pa.Table.from_arrays(
            [*(old[k] for k in self.key_names), pa.array(sid[:n_old], pa.int64())]
            + [old[f.name] for f in self.agg.state_fields],
            schema=self.agg.schema(self.by),
        )
        merged = self.agg.merge([held, fresh], self.by)
        m_sid = merged[SID].to_numpy()
        self.open = pa.Table.from_arrays(
            [*(merged[k] for k in self.key_names), pa.array(first[m_sid]), pa.array(last[m_sid])]
            + [merged[f.name] for f in self.agg.state_fields],
            schema=self.open_schema,
        )

    def _close(self) -> pa.Table | None:
        if self.open.num_rows == 0:
            return None
        ends = self.open[END].to_numpy()
        closing = ends + self.gap + self.lateness < self.watermark.watermark_ms
        if not closing.any():
            return None
        done = self.open.filter(pa.array(closing))
        self.open = self.open.filter(pa.array(~closing))
        table = self.agg.final(done, self.key_names)
        return with_window(
            table, done[START].to_numpy(), done[END].to_numpy() + self.gap, len(self.keys)
        )

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict()}
        return pack(meta, {"open": self.open})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        self.open = self.agg.conform(tables["open"], self.open_schema)

    def status(self) -> dict[str, Any]:
        ends = self.open[END].to_numpy() + self.gap
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "open_windows": self.open.num_rows,
            "oldest_open_window_end_ms": int(ends.min()) if len(ends) else None,
            "state_rows": self.open.num_rows,
            "state_bytes": self.open.nbytes,
            **self.counters.to_dict(),
        }
