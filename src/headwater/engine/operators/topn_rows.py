"""Window Top-N over a window's rows (not aggregated): Flink's Window Top-N on TUMBLE/HOP.

``SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, auction ORDER BY
price DESC) AS rn FROM TUMBLE(bids, ts, INTERVAL '10 seconds')) WHERE rn <= 3``: rows are
buffered under each window they fall in until the watermark closes the window; then one
DuckDB query evaluates the SELECT list (over the row and ``window_start``/``window_end``),
ranks and filters the closed windows' rows, and the rows that pass are appended.
Late rows (their window closed) go to the late table, as for window aggregates.
State: the buffered rows with their window start, the watermark.
"""

from __future__ import annotations

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
from headwater.engine.operators.query import BATCH, BatchQuery, conform, quote
from headwater.engine.operators.topn import rank, ranking_sql
from headwater.engine.plan import WINDOW_END, WINDOW_START, WINDOW_TYPE, Plan
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark
from headwater.engine.windows import assign, closed_through, late_windows
from headwater.errors import QueryError, UnsupportedSQL

WS = "_ws"


def compile_ranked_rows(plan: Plan, input_schema: pa.Schema) -> Compiled:
    """The SELECT list over rows with their window, ranked and filtered, as one query."""
    assert plan.top_n is not None
    label = f"pipeline {plan.name}"
    rows = input_schema.append(pa.field(WINDOW_START, WINDOW_TYPE))
    rows = rows.append(pa.field(WINDOW_END, WINDOW_TYPE))
    items = [c.expr if c.name == "*" else f"{c.expr} AS {quote(c.name)}" for c in plan.projection]
    inner = f"SELECT {', '.join(items)} FROM {BATCH} AS {quote(plan.source_alias)}"
    if plan.filter is not None:
        inner += f" WHERE {plan.filter}"
    try:
        columns = BatchQuery(inner, rows, None, label).schema.names
        query = BatchQuery(ranking_sql(plan.top_n, columns, f"({inner})"), rows, None, label)
    except UnsupportedSQL:
        raise
    except Exception as exc:  # DuckDB's binder/parser errors name the problem
        raise QueryError(f"{label}: {exc}") from exc
    return Compiled(plan, input_schema, query, None, None, (), query.schema, query)


class RankedWindowRows:
    def __init__(self, compiled: Compiled) -> None:
        plan = compiled.plan
        assert plan.window is not None and isinstance(compiled.top_n, BatchQuery)
        self.spec = plan.window
        self.schema = compiled.input_schema
        self.query = compiled.top_n
        self.lateness = plan.options.allowed_lateness_ms
        self.watermark = Watermark(plan.options.watermark_delay_ms, plan.options.idle_timeout_ms)
        self.held = self.schema.append(pa.field(WS, pa.int64())).empty_table()
        self.counters = Counters()

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.schema)
        n = batch.num_rows
        errors = None
        ts, valid = event_ms(batch[self.spec.time_column])
        if not valid.all():
            bad = np.flatnonzero(~valid)
            message = f"event time {self.spec.time_column} is NULL"
            errors = error_rows(batch, bad, [message] * len(bad))
            batch, ts = batch.filter(pa.array(valid)), ts[valid]
        wm = self.watermark.watermark_ms
        rows, starts = late_windows(ts, self.spec, wm, self.lateness)
        late = late_rows(batch, rows, starts, "window_closed") if len(rows) else None
        rows, starts = assign(ts, self.spec)
        keep = starts > closed_through(self.spec, wm, self.lateness)
        taken = batch.take(pa.array(rows[keep])).append_column(WS, pa.array(starts[keep]))
        self.held = concat([self.held, taken]) or self.held
        if len(ts):
            self.watermark = self.watermark.observe(int(ts.max()), now_ms)
        return self._close(late, errors, n)

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        return self._close(None, None, 0)

    def finish(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.finish()
        return self._close(None, None, 0)

    def _close(self, late: pa.Table | None, errors: pa.Table | None, n: int) -> StepOutput:
        top = closed_through(self.spec, self.watermark.watermark_ms, self.lateness)
        starts = self.held[WS].to_numpy()
        done = starts <= top
        if not done.any():
            return self.counters.count(StepOutput(None, None, late, errors), n)
        closing = self.held.filter(pa.array(done))
        self.held = self.held.filter(pa.array(~done))
        ws = closing[WS].to_numpy()
        closing = closing.drop_columns([WS])
        closing = closing.append_column(pa.field(WINDOW_START, WINDOW_TYPE), _times(ws))
        window_end = _times(ws + self.spec.size_ms)
        closing = closing.append_column(pa.field(WINDOW_END, WINDOW_TYPE), window_end)
        ranked, failed = rank(self.query, closing, self.schema)
        out = StepOutput(None, ranked, late, concat([errors, failed]))
        return self.counters.count(out, n)

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict()}
        return pack(meta, {"rows": self.held})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        self.held = conform(tables["rows"], self.held.schema)

    def status(self) -> dict[str, Any]:
        starts = np.unique(self.held[WS].to_numpy())
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "open_windows": len(starts),
            "oldest_open_window_end_ms": int(starts[0]) + self.spec.size_ms
            if len(starts)
            else None,
            "state_rows": self.held.num_rows,
            "state_bytes": self.held.nbytes,
            **self.counters.to_dict(),
        }


def _times(ms: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(ms, dtype=np.int64), pa.int64()).cast(WINDOW_TYPE)
