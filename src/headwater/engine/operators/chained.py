"""A single-input operator (window, session, dedup, Top-N...) as a node of the graph.

The operators of a stream's chain take one input and time themselves on its event
time. In the graph they take port 0; when they follow a join (``driven``), their
watermark is the one the graph hands them, and ``on_watermark`` closes what it passes.
"""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa

from headwater.engine.graph import OperatorKind, OperatorStatus
from headwater.engine.operators.base import Operator, StepOutput
from headwater.engine.watermark import Watermark


class Chained:
    def __init__(self, kind: OperatorKind, op: Operator, driven: bool = False) -> None:
        self.kind = kind
        self.op = op
        self.driven = driven
        self._passed: int | None = None  # the watermark handed to an operator without one
        clock = self._clock()
        if driven and clock is not None:
            self._set_clock(replace(clock, driven=True))

    def _holder(self) -> object:
        return getattr(self.op, "inner", self.op)  # Top-N ranks what its aggregate emits

    def _clock(self) -> Watermark | None:
        clock = getattr(self._holder(), "watermark", None)
        return clock if isinstance(clock, Watermark) else None

    def _set_clock(self, clock: Watermark) -> None:
        self._holder().watermark = clock  # type: ignore[attr-defined]

    def process(self, port: int, batch: pa.Table, now_ms: int) -> StepOutput:
        return self.op.process(batch, now_ms)

    def on_watermark(self, watermark_ms: int, now_ms: int) -> StepOutput:
        clock = self._clock()
        if clock is None:
            self._passed = watermark_ms
            return StepOutput()
        self._set_clock(clock.advance_to(watermark_ms))
        return self.op.on_time(now_ms)

    def watermark_ms(self) -> int | None:
        clock = self._clock()
        if clock is None:
            return self._passed
        return clock.watermark_ms if clock.known else None

    def on_time(self, now_ms: int) -> StepOutput:
        return self.op.on_time(now_ms)

    def finish(self, now_ms: int) -> StepOutput:
        return self.op.finish(now_ms)

    def snapshot(self) -> bytes:
        return self.op.snapshot()

    def restore(self, data: bytes) -> None:
        self.op.restore(data)

    def status(self) -> OperatorStatus:
        return OperatorStatus.of(self.kind, self.op.status())
