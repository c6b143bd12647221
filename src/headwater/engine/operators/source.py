"""Where a stream enters the graph: its rows pass on, its watermark starts here.

With a ``time_column`` (a stream of a join), the source's watermark follows the
stream's event time (``max seen - watermark_delay``, idle advance as in
``headwater.engine.watermark``), and the graph hands the minimum over a join's sources
to the join. Without one (a single stream's chain) the operators after it time
themselves, and the source only counts rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from headwater.engine.graph import OperatorKind, OperatorStatus
from headwater.engine.operators.base import Counters, StepOutput, event_ms
from headwater.engine.plan import Options
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark


class Source:
    kind = OperatorKind.SOURCE
    driven = False

    def __init__(
        self, stream: str, time_column: str | None = None, options: Options | None = None
    ) -> None:
        options = options or Options()
        self.stream = stream
        self.time_column = time_column
        self.watermark = Watermark(options.watermark_delay_ms, options.idle_timeout_ms)
        self.counters = Counters()

    def process(self, port: int, batch: pa.Table, now_ms: int) -> StepOutput:
        if self.time_column is not None and batch.num_rows:
            ts, valid = event_ms(batch[self.time_column])
            if valid.any():
                self.watermark = self.watermark.observe(int(np.max(ts[valid])), now_ms)
        self.counters.rows_in += batch.num_rows
        self.counters.rows_out += batch.num_rows
        return StepOutput(appends=batch)

    def on_watermark(self, watermark_ms: int, now_ms: int) -> StepOutput:
        return StepOutput()

    def watermark_ms(self) -> int | None:
        if self.time_column is None or not self.watermark.known:
            return None
        return self.watermark.watermark_ms

    def on_time(self, now_ms: int) -> StepOutput:
        if self.time_column is not None:
            self.watermark = self.watermark.on_time(now_ms)
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        if self.time_column is not None:
            self.watermark = self.watermark.finish()
        return StepOutput()

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict()}
        return pack(meta, {})

    def restore(self, data: bytes) -> None:
        meta, _ = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])

    def status(self) -> OperatorStatus:
        return OperatorStatus.of(
            self.kind, {"watermark_ms": self.watermark_ms(), **self.counters.to_dict()}
        )
