"""``MATCH_RECOGNIZE`` pipelines: rows wait until the watermark passes, then match in order.

Rows are buffered as they arrive. Once the watermark (less ``allowed_lateness``) has
passed a row's event time, no earlier row can still come, so the rows it passed are
sorted by event time (ties keep arrival order) and handed to the ``PatternEngine``,
which matches per partition and stops partial matches WITHIN rules out. A row that
arrives behind that point is late (``_reason = 'behind_watermark'``). Each decided
match is one appended row: the SELECT list over partition columns and MEASURES.
State: the buffered rows, the engine's partial matches and retained rows, the watermark.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.compile import Compiled, compile_rows
from headwater.engine.operators.base import (
    Counters,
    StepOutput,
    concat,
    error_rows,
    event_ms,
    late_rows,
)
from headwater.engine.operators.emit import project
from headwater.engine.operators.query import conform, connect
from headwater.engine.patterns import ConditionError, PatternEngine
from headwater.engine.plan import Plan
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark
from headwater.errors import QueryError


def compile_pattern_plan(plan: Plan, input_schema: pa.Schema) -> Compiled:
    """The engine's match rows, then the SELECT list (and WHERE) over them."""
    assert plan.pattern is not None
    try:
        engine = PatternEngine(plan.pattern, input_schema, connect)
    except (ConditionError, ValueError) as exc:
        raise QueryError(f"pipeline {plan.name}: MATCH_RECOGNIZE: {exc}") from exc
    post = compile_rows(plan, plan.projection, engine.output_schema)
    return Compiled(plan, input_schema, post, None, post, (), post.schema)


class PatternMatch:
    def __init__(self, compiled: Compiled) -> None:
        plan = compiled.plan
        assert plan.pattern is not None
        self.c = compiled
        self.time_column = plan.pattern.order_by
        self.lateness = plan.options.allowed_lateness_ms
        self.engine = PatternEngine(plan.pattern, compiled.input_schema, connect)
        self.buffer = compiled.input_schema.empty_table()
        self.watermark = Watermark(plan.options.watermark_delay_ms, plan.options.idle_timeout_ms)
        self.counters = Counters()

    @property
    def horizon_ms(self) -> int:
        """Rows before this event time have all arrived (or are late)."""
        return self.watermark.watermark_ms - self.lateness

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.c.input_schema)
        n = batch.num_rows
        ts, valid = event_ms(batch[self.time_column])
        errors = None
        if not valid.all():
            bad = np.flatnonzero(~valid)
            errors = error_rows(batch, bad, [f"event time {self.time_column} is NULL"] * len(bad))
            batch, ts = batch.filter(pa.array(valid)), ts[valid]
        late = None
        if self.watermark.known:
            behind = ts < self.horizon_ms
            if behind.any():
                late = late_rows(batch, np.flatnonzero(behind), None, "behind_watermark")
                batch, ts = batch.filter(pa.array(~behind)), ts[~behind]
        self.buffer = concat([self.buffer, batch]) or self.buffer
        if len(ts):
            self.watermark = self.watermark.observe(int(ts.max()), now_ms)
        out = self._release()
        return self.counters.count(
            StepOutput(appends=out.appends, late=late, errors=concat([errors, out.errors])), n
        )

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        return self.counters.count(self._release(), 0)

    def finish(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.finish()
        out = self._release()
        rows, failed = project(self.c, self.engine.finish())
        return self.counters.count(out.then(StepOutput(appends=rows, errors=failed)), 0)

    def _release(self) -> StepOutput:
        if not self.watermark.known:
            return StepOutput()
        horizon = self.horizon_ms
        matches = []
        if self.buffer.num_rows:
            ts, _ = event_ms(self.buffer[self.time_column])
            ready = ts < horizon
            if ready.any():
                rows = self.buffer.filter(pa.array(ready))
                self.buffer = self.buffer.filter(pa.array(~ready))
                order = pc.sort_indices(pa.array(ts[ready]), sort_keys=[("", "ascending")])
                matches.append(self.engine.push(rows.take(order)))
        matches.append(self.engine.expire(horizon - 1))
        found = concat(matches)
        rows_out, failed = project(self.c, found)
        return StepOutput(appends=rows_out, errors=failed)

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict()}
        engine = pa.table({"state": pa.array([self.engine.snapshot()], pa.large_binary())})
        return pack(meta, {"buffer": self.buffer, "engine": engine})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        self.buffer = conform(tables["buffer"], self.c.input_schema)
        self.engine.restore(tables["engine"]["state"][0].as_py())

    def status(self) -> dict[str, Any]:
        engine = self.engine.status()
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "buffered_rows": self.buffer.num_rows,
            "partial_matches": engine["partial_matches"],
            "dropped_partial_matches": engine["dropped_partial_matches"],
            "matches": engine["matches"],
            "state_rows": self.buffer.num_rows + engine["retained_rows"],
            "state_bytes": self.buffer.nbytes,
            **self.counters.to_dict(),
        }
