"""Stateless pipelines: filter, projection, derived columns and enrichment joins.

One DuckDB query per batch (see ``query.BatchQuery``); rows an expression fails on go
to ``errors`` and the rest of the batch proceeds. Results are ``appends``.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from headwater.engine.compile import Compiled
from headwater.engine.operators.base import Counters, StepOutput, error_rows
from headwater.engine.operators.query import conform
from headwater.engine.state import pack, unpack


class Stateless:
    def __init__(self, compiled: Compiled) -> None:
        self.c = compiled
        self.counters = Counters()

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.c.input_schema)
        result = self.c.rows.run(batch)
        errors = error_rows(batch, result.failed, result.messages) if len(result.failed) else None
        return self.counters.count(StepOutput(appends=result.rows, errors=errors), batch.num_rows)

    def on_time(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def snapshot(self) -> bytes:
        return pack({"counters": self.counters.to_dict()}, {})

    def restore(self, data: bytes) -> None:
        meta, _ = unpack(data)
        self.counters = Counters()
        self.counters.load(meta["counters"])

    def status(self) -> dict[str, Any]:
        return {"watermark_ms": None, "state_rows": 0, "state_bytes": 0, **self.counters.to_dict()}
