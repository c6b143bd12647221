"""``Pipeline``: a plan made runnable over the micro-batches of its stream(s).

The plan compiles to an operator graph (``headwater.engine.graph``): for one stream a
chain (``DEDUP`` first when asked for, then the stateless query or the aggregation,
see ``chain``); for a join of streams, a source per stream, the join, and the chain
over the joined rows (see ``joins``). The pipeline exposes one operator's contract, so
a runner needs only this loop::

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

from collections.abc import Collection, Mapping
from typing import Any

import pyarrow as pa

from headwater.engine.chain import legacy_names
from headwater.engine.compile import Compiled
from headwater.engine.graph import Graph, pack_graph, unpack_graph
from headwater.engine.models import Models
from headwater.engine.operators.base import StepOutput, error_schema, late_schema
from headwater.engine.plan import Plan
from headwater.engine.received import as_received_at
from headwater.engine.references import InMemoryReferenceTables, ReferenceTables
from headwater.engine.sql.planner import plan_pipeline
from headwater.engine.subgraph import build_nodes
from headwater.errors import Conflict

# 1: ``op{i}`` per operator of the chain; 2: per graph node, by name (``chain.LEGACY``)
STATE_VERSION = 2
READABLE_VERSIONS = (1, 2)


class Pipeline:
    def __init__(
        self,
        plan: Plan,
        input_schema: pa.Schema | Mapping[str, pa.Schema],
        references: ReferenceTables | None = None,
        models: Models | None = None,
    ) -> None:
        self.plan = plan
        if not isinstance(input_schema, Mapping):
            input_schema = {plan.source: input_schema}
        built = build_nodes(plan, input_schema, references or InMemoryReferenceTables(), models)
        self.graph = Graph(built.nodes)
        self.compiled: Compiled = built.compiled
        self.input_schemas = built.input_schemas
        self.input_schema = built.late_schema  # what late and error rows hold

    @classmethod
    def from_sql(
        cls,
        sql: str,
        input_schema: pa.Schema | Mapping[str, pa.Schema],
        references: ReferenceTables | None = None,
        streams: Collection[str] = (),
        models: Models | None = None,
        pipelines: Mapping[str, str] | None = None,
    ) -> Pipeline:
        plan = plan_pipeline(sql, streams=streams, pipelines=pipelines)
        return cls(plan, input_schema, references, models)

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def inputs(self) -> tuple[str, ...]:
        """The streams the pipeline reads (one, or one per side of a join)."""
        return tuple(self.input_schemas)

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

    def process(
        self, batch: pa.Table | pa.RecordBatch, now_ms: int, stream: str | None = None
    ) -> StepOutput:
        """Run one micro-batch of ``stream`` (the pipeline's only one by default) through."""
        data = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        return self.graph.process(stream or self.plan.source, as_received_at(data), now_ms)

    def on_time(self, now_ms: int) -> StepOutput:
        """Processing time passed: idle watermark advance, windows that close because of it."""
        return self.graph.on_time(now_ms)

    def finish(self, now_ms: int) -> StepOutput:
        """End of a bounded input (a backfill, a test): close and emit every window."""
        return self.graph.finish(now_ms)

    def snapshot(self) -> bytes:
        """The whole state as Arrow IPC bytes; ``restore`` is the inverse."""
        return pack_graph({"version": STATE_VERSION, "sql": self.plan.sql}, self.graph)

    def restore(self, data: bytes) -> None:
        meta, tables = unpack_graph(data)
        if meta.get("version") not in READABLE_VERSIONS or meta.get("sql") != self.plan.sql:
            raise Conflict(
                f"the saved state of pipeline {self.name} belongs to another definition; "
                "drop and recreate the pipeline to start from empty state"
            )
        if meta["version"] == 1:
            names = legacy_names(self.graph.nodes)
            tables = {names[k]: t for k, t in tables.items() if k in names}
        self.graph.restore_tables(tables)

    def status(self) -> dict[str, Any]:
        """Watermark, open windows, state size, oldest open window end, counters."""
        return self.graph.status()
