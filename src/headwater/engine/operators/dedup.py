"""``DEDUP(stream, id_column, time_column, INTERVAL horizon)``: the first row of each id passes.

An id is remembered from the first row that carries it until the watermark passes
that row's event time + horizon; any other row with a remembered id is dropped (and
counted as ``dropped_duplicates``). A row whose own event time is already that far
behind the watermark (``ts + horizon <= watermark``) cannot be checked against ids
that were forgotten, so it is returned as late (``behind_dedup_horizon``), never passed
on unchecked. Rows without an id pass. Per batch: one hash lookup of the batch's ids
in the remembered ones, no loop per row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.aggregates.groups import as_array, group_rows
from headwater.engine.operators.base import Counters, StepOutput, error_rows, event_ms, late_rows
from headwater.engine.operators.query import conform
from headwater.engine.plan import DedupSpec, Options
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark


class Dedup:
    def __init__(self, spec: DedupSpec, options: Options, input_schema: pa.Schema) -> None:
        self.spec = spec
        self.input_schema = input_schema
        id_type = input_schema.field(spec.id_column).type
        self.seen_schema = pa.schema([pa.field("id", id_type), pa.field("ts", pa.int64())])
        self.seen = self.seen_schema.empty_table()
        self.watermark = Watermark(options.watermark_delay_ms, options.idle_timeout_ms)
        self.counters = Counters()

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.input_schema)
        n = batch.num_rows
        ts, valid = event_ms(batch[self.spec.time_column])
        errors = None
        if not valid.all():
            bad = np.flatnonzero(~valid)
            message = f"event time {self.spec.time_column} is NULL"
            errors = error_rows(batch, bad, [message] * len(bad))
            batch, ts = batch.filter(pa.array(valid)), ts[valid]
        behind = ts + self.spec.horizon_ms <= self.watermark.watermark_ms
        late = None
        if behind.any():
            late = late_rows(batch, np.flatnonzero(behind), None, "behind_dedup_horizon")
        passing = self._first_seen(as_array(batch[self.spec.id_column]), ts, ~behind)
        self.counters.dropped_duplicates += int((~behind & ~passing).sum())
        if len(ts):
            self.watermark = self.watermark.observe(int(ts.max()), now_ms)
        self._forget()
        out = StepOutput(appends=batch.filter(pa.array(passing)), late=late, errors=errors)
        return self.counters.count(out, n)

    def _first_seen(self, ids: pa.Array, ts: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """Rows that pass: candidates whose id is new (first of the batch, not remembered)."""
        has_id = ids.is_valid().to_numpy(zero_copy_only=False)
        check = candidate & has_id
        rows = np.flatnonzero(check)
        picked = ids.take(pa.array(rows, pa.int64()))
        first = np.zeros(len(ids), dtype=bool)
        first[rows[group_rows([picked]).first]] = True
        known = pc.is_in(ids, value_set=as_array(self.seen["id"])).to_numpy(zero_copy_only=False)
        passing = first & ~known
        new = np.flatnonzero(passing)
        added = pa.table({"id": ids.take(pa.array(new, pa.int64())), "ts": ts[new]})
        self.seen = pa.concat_tables([self.seen, added.cast(self.seen_schema)])
        return np.asarray(passing | (candidate & ~has_id), dtype=bool)

    def _forget(self) -> None:
        expired = self.seen["ts"].to_numpy() + self.spec.horizon_ms <= self.watermark.watermark_ms
        if expired.any():
            self.seen = self.seen.filter(pa.array(~expired)).combine_chunks()

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        self._forget()
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict()}
        return pack(meta, {"seen": self.seen})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        self.seen = tables["seen"]

    def status(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "state_rows": self.seen.num_rows,
            "state_bytes": self.seen.nbytes,
            **self.counters.to_dict(),
        }
