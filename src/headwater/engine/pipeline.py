"""``Pipeline``: a plan made runnable over the micro-batches of its stream.

The operators are chained (``DEDUP`` first when asked for, then the stateless query or
the aggregation); the pipeline exposes one operator's contract, so a runner needs
only this loop::

    pipeline = Pipeline(plan, stream_schema, reference_tables)
    pipeline.restore(store.consumer_state(...))            # if there is one
    for batch in log.read(...):
        out = pipeline.process(batch, clock.now_ms())       # also on_time() when idle
        store.commit(ResultWrite(..., state=pipeline.snapshot()))

``out.upserts`` are keyed by ``pipeline.output_key``; ``out.appends`` are appended;
``out.late`` / ``out.errors`` have ``late_schema`` / ``error_schema``. To commit several
steps at once, combine them with ``a.then(b, key=pipeline.output_key)`` (later upserts
of a key replace earlier ones).

>>> import pyarrow as pa
>>> schema = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
...                     ("temperature", pa.float64())])
>>> p = Pipeline.from_sql(
...     "CREATE PIPELINE m AS SELECT device_id, window_start, count(*) AS n, "
...     "max(temperature) AS hi FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
...     "GROUP BY device_id, window_start, window_end", schema)
>>> batch = pa.table({"device_id": ["a", "a", "b"], "ts": pa.array([1_000, 2_000, 61_000],
...                   pa.timestamp("ms", tz="UTC")), "temperature": [20.5, 21.0, 19.0]})
>>> out = p.process(batch, now_ms=0)
>>> out.upserts.to_pylist()[0]["n"], out.upserts.to_pylist()[0]["hi"]
(2, 21.0)
>>> p.output_key
('device_id', 'window_start')
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

import pyarrow as pa

from headwater.engine.compile import compile_plan, ref_name
from headwater.engine.models import InMemoryModels, Models
from headwater.engine.operators.anomaly import AnomalyScore
from headwater.engine.operators.base import Operator, StepOutput, error_schema, late_schema
from headwater.engine.operators.dedup import Dedup
from headwater.engine.operators.over import OverAggregate
from headwater.engine.operators.pattern import PatternMatch
from headwater.engine.operators.predict import ModelScore
from headwater.engine.operators.query import BatchQuery
from headwater.engine.operators.session import SessionAggregate
from headwater.engine.operators.stateless import Stateless
from headwater.engine.operators.topn_changes import top_n_stage
from headwater.engine.operators.topn_rows import RankedWindowRows
from headwater.engine.operators.window import WindowAggregate
from headwater.engine.plan import Plan
from headwater.engine.received import as_received_at, with_received_at
from headwater.engine.references import InMemoryReferenceTables, ReferenceTables
from headwater.engine.sql.planner import plan_pipeline
from headwater.engine.state import pack, unpack
from headwater.errors import Conflict

STATE_VERSION = 1


class Pipeline:
    def __init__(
        self,
        plan: Plan,
        input_schema: pa.Schema,
        references: ReferenceTables | None = None,
        models: Models | None = None,
    ) -> None:
        refs = references or InMemoryReferenceTables()
        schemas = {name: refs.get(name).schema for name in plan.references}

        def tables() -> dict[str, pa.Table]:
            return {ref_name(i): refs.get(j.table) for i, j in enumerate(plan.joins)}

        input_schema = with_received_at(plan.sql, input_schema)
        self.plan = plan
        self.input_schema = input_schema
        self.operators: list[Operator] = []
        if plan.dedup is not None:
            self.operators.append(Dedup(plan.dedup, plan.options, input_schema))
        scored = input_schema
        if plan.predictions:
            stage = ModelScore(
                plan.predictions, models or InMemoryModels(), input_schema, f"pipeline {plan.name}"
            )
            self.operators.append(stage)
            scored = stage.output_schema
        self.compiled = compile_plan(plan, scored, schemas, tables)
        if plan.scoring is not None:
            self.operators.append(AnomalyScore(plan.scoring, scored, f"pipeline {plan.name}"))
        if plan.over is not None:
            label = f"pipeline {plan.name}"
            self.operators.append(OverAggregate(plan.over, plan.options, input_schema, label))
        main: Operator
        if plan.top_n is not None and not plan.grouped:
            main = RankedWindowRows(self.compiled)
        elif plan.kind == "stateless":
            main = Stateless(self.compiled)
        elif plan.kind == "pattern":
            main = PatternMatch(self.compiled)
        elif plan.kind == "session":
            main = SessionAggregate(self.compiled)
        else:
            main = WindowAggregate(self.compiled)
        if self.compiled.top_n is not None and plan.grouped:
            assert isinstance(self.compiled.top_n, BatchQuery)
            main = top_n_stage(main, self.compiled, input_schema)
        self.operators.append(main)

    @classmethod
    def from_sql(
        cls,
        sql: str,
        input_schema: pa.Schema,
        references: ReferenceTables | None = None,
        streams: Collection[str] = (),
        models: Models | None = None,
    ) -> Pipeline:
        return cls(plan_pipeline(sql, streams=streams), input_schema, references, models)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def output_schema(self) -> pa.Schema:
        return self.compiled.output_schema

    @property
    def output_key(self) -> tuple[str, ...]:
        """Key columns of ``upserts``; empty when the pipeline only appends."""
        return self.plan.output_key

    @property
    def late_schema(self) -> pa.Schema:
        return late_schema(self.input_schema)

    @property
    def error_schema(self) -> pa.Schema:
        return error_schema(self.input_schema)

    def process(self, batch: pa.Table | pa.RecordBatch, now_ms: int) -> StepOutput:
        """Run one micro-batch of the stream through the pipeline."""
        data = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        return self._through(as_received_at(data), 0, now_ms)

    def _through(self, data: pa.Table, start: int, now_ms: int) -> StepOutput:
        """``data`` through the operators from ``start`` on, each one's rows to the next."""
        out = StepOutput()
        for op in self.operators[start:-1]:
            step = op.process(data, now_ms)
            out = out.then(StepOutput(late=self._rows(step.late), errors=self._rows(step.errors)))
            data = step.appends if step.appends is not None else self.input_schema.empty_table()
        last = self.operators[-1].process(data, now_ms)
        return out.then(replace(last, late=self._rows(last.late), errors=self._rows(last.errors)))

    def _rows(self, table: pa.Table | None) -> pa.Table | None:
        """Late or error rows as the stream had them: without the columns the model,
        scoring and OVER stages add (``_pm*``, ``_an*``, ``_ov*``)."""
        if table is None:
            return table
        plan = self.plan
        hidden = {p.column for p in plan.predictions}
        hidden |= {s.column for s in plan.scoring.scores} if plan.scoring else set()
        hidden |= {c.name for c in plan.over.calls} if plan.over else set()
        if not hidden.intersection(table.schema.names):
            return table
        return table.select([n for n in table.schema.names if n not in hidden])

    def on_time(self, now_ms: int) -> StepOutput:
        """Processing time passed: idle watermark advance, windows that close because of it."""
        return self._timed(lambda op: op.on_time(now_ms), now_ms)

    def finish(self, now_ms: int) -> StepOutput:
        """End of a bounded input (a backfill, a test): close and emit every window."""
        return self._timed(lambda op: op.finish(now_ms), now_ms)

    def _timed(self, call: Callable[[Operator], StepOutput], now_ms: int) -> StepOutput:
        """``call`` on every operator in order; rows an operator releases (OVER aggregates
        waiting for the watermark) go through the operators after it, as a batch's would."""
        out = StepOutput()
        last = len(self.operators) - 1
        for i, op in enumerate(self.operators):
            step = call(op)
            if i == last:
                return out.then(replace(step, late=self._rows(step.late),
                                        errors=self._rows(step.errors)))  # fmt: skip
            out = out.then(StepOutput(late=self._rows(step.late), errors=self._rows(step.errors)))
            if step.appends is not None and step.appends.num_rows:
                out = out.then(self._through(step.appends, i + 1, now_ms))
        return out

    def snapshot(self) -> bytes:
        """The whole state as Arrow IPC bytes; ``restore`` is the inverse."""
        tables = {
            f"op{i}": pa.table({"state": pa.array([op.snapshot()], pa.large_binary())})
            for i, op in enumerate(self.operators)
        }
        return pack({"version": STATE_VERSION, "sql": self.plan.sql}, tables)

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        if meta.get("version") != STATE_VERSION or meta.get("sql") != self.plan.sql:
            raise Conflict(
                f"the saved state of pipeline {self.name} belongs to another definition; "
                "drop and recreate the pipeline to start from empty state"
            )
        for i, op in enumerate(self.operators):
            op.restore(tables[f"op{i}"]["state"][0].as_py())

    def status(self) -> dict[str, Any]:
        """Watermark, open windows, state size, oldest open window end, counters."""
        out = dict(self.operators[-1].status())
        for op in reversed(self.operators[:-1]):  # the first operator's input counts
            first = op.status()
            out["dropped_duplicates"] = first["dropped_duplicates"]
            out["rows_in"] = first["rows_in"]
            for key in ("late_rows", "error_rows", "state_rows", "state_bytes"):
                out[key] = out.get(key, 0) + first[key]
            if out.get("watermark_ms") is None:
                out["watermark_ms"] = first["watermark_ms"]
        return out
