"""``DEDUP(stream, id_column, time_column, INTERVAL horizon)``: the first row of each id passes.

An id is remembered from the first row that carries it until the watermark passes
that row's event time + horizon; any other row with a remembered id is dropped (and
counted as ``dropped_duplicates``). A row whose own event time is already that far
behind the watermark (``ts + horizon <= watermark``) cannot be checked against ids
that were forgotten, so it is returned as late (``behind_dedup_horizon``), never passed
on unchecked. Rows without an id pass. Per batch: one vectorized lookup of the batch's
ids in a hash table of the remembered ones (``headwater.engine.operators.seen``), so the
cost follows the batch, not how many ids are remembered.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array, group_rows
from headwater.engine.operators.base import Counters, StepOutput, error_rows, event_ms, late_rows
from headwater.engine.operators.query import conform
from headwater.engine.operators.seen import STATE, SeenIds, hashable, id_hashes
from headwater.engine.plan import DedupSpec, Options
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark
from headwater.errors import QueryError


class Dedup:
    def __init__(self, spec: DedupSpec, options: Options, input_schema: pa.Schema) -> None:
        self.spec = spec
        self.input_schema = input_schema
        id_type = input_schema.field(spec.id_column).type
        if not hashable(id_type):
            raise QueryError(
                f"DEDUP id column {spec.id_column!r} is {id_type}; "
                "use a string, binary, number or timestamp column"
            )
        self.seen = SeenIds(spec.horizon_ms)
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
        behind = ts <= self.watermark.watermark_ms - self.spec.horizon_ms
        late = None
        if behind.any():
            late = late_rows(batch, np.flatnonzero(behind), None, "behind_dedup_horizon")
        passing = self._first_seen(as_array(batch[self.spec.id_column]), ts, ~behind)
        self.counters.dropped_duplicates += int((~behind & ~passing).sum())
        if len(ts):
            self.watermark = self.watermark.observe(int(ts.max()), now_ms)
        self.seen.forget(self.watermark.watermark_ms)
        out = StepOutput(appends=batch.filter(pa.array(passing)), late=late, errors=errors)
        return self.counters.count(out, n)

    def _first_seen(self, ids: pa.Array, ts: np.ndarray, candidate: np.ndarray) -> np.ndarray:
        """Rows that pass: candidates whose id is new (first of the batch, not remembered)."""
        has_id = ids.is_valid().to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(candidate & has_id)
        picked = ids if len(rows) == len(ids) else ids.take(pa.array(rows, pa.int64()))
        hash, check = id_hashes(picked)
        # ids are equal when their hashes are (so 0.0 and -0.0 are one id, as in SQL)
        first = group_rows([pa.array(hash), pa.array(check)]).first
        new = self.seen.first_seen(
            hash[first], check[first], ts[rows[first]], self.watermark.watermark_ms
        )
        passing: np.ndarray = candidate & ~has_id
        passing[rows[first[new]]] = True
        return passing

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        self.seen.forget(self.watermark.watermark_ms)
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict()}
        return pack(meta, {"seen": self.seen.live(self.watermark.watermark_ms)})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        seen = tables["seen"]
        if "id" in seen.column_names:  # saved as (id, ts) before ids were hashed
            hash, check = id_hashes(seen["id"])
            seen = pa.table([hash, check, seen["ts"]], schema=STATE)
        self.seen = SeenIds.load(self.spec.horizon_ms, seen)

    def status(self) -> dict[str, Any]:
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "state_rows": self.seen.used,
            "state_bytes": self.seen.nbytes,
            **self.counters.to_dict(),
        }
