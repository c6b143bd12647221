"""OVER aggregates on event time: each row with aggregates over its key's preceding rows.

Rows wait until the watermark (less ``allowed_lateness``) passes their event time: then
no earlier row can still come, and one DuckDB query computes the OVER calls as written
over the released rows together with the *history* their frames reach (the last ``n``
rows of each key for ``ROWS n PRECEDING``, the rows within the interval for ``RANGE``).
Rows with equal event times are ordered by arrival. A row behind that point is late
(``_reason = 'behind_watermark'``). State: waiting rows, history, the watermark.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.operators.base import (
    Counters,
    StepOutput,
    concat,
    error_rows,
    event_ms,
    late_rows,
)
from headwater.engine.operators.query import BATCH, BatchQuery, conform
from headwater.engine.plan import Options, OverAggregates
from headwater.engine.sql.over import SEQ
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import Watermark

NEW = "_hw_new"
NEVER = -(2**62)


def over_query(over: OverAggregates, schema: pa.Schema, label: str) -> BatchQuery:
    """The OVER calls over rows of ``schema`` + ``_hw_seq`` + ``_hw_new``."""
    calls = ", ".join(f'{c.expr} AS "{c.name}"' for c in over.calls)
    sql = f"SELECT * EXCLUDE ({SEQ}, {NEW}), {calls} FROM {BATCH} QUALIFY {NEW} ORDER BY "
    sql += f'"{over.order}", {SEQ}'
    return BatchQuery(sql, _held_schema(schema).append(pa.field(NEW, pa.bool_())), None, label)


def _held_schema(schema: pa.Schema) -> pa.Schema:
    return schema.append(pa.field(SEQ, pa.int64()))


class OverAggregate:
    def __init__(self, over: OverAggregates, options: Options, schema: pa.Schema, label: str):
        self.over = over
        self.schema = schema
        self.lateness = options.allowed_lateness_ms
        self.query = over_query(over, schema, label)
        self.filter = None
        if over.filter:
            self.filter = BatchQuery(
                f"SELECT * FROM {BATCH} WHERE {over.filter}", schema, None, label
            )
        keep = f"row_number() OVER (PARTITION BY {', '.join(over.partition) or 'NULL'} "
        keep += f'ORDER BY "{over.order}" DESC, {SEQ} DESC) <= {over.rows}'
        self.trim_sql = keep
        self.watermark = Watermark(options.watermark_delay_ms, options.idle_timeout_ms)
        self.waiting = _held_schema(schema).empty_table()
        self.history = self.waiting
        self.seq = 0
        self.released = NEVER
        self.counters = Counters()
        self.label = label

    @property
    def output_schema(self) -> pa.Schema:
        return self.query.schema

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.schema)
        n, errors = batch.num_rows, []
        if self.filter is not None:
            result = self.filter.run(batch)
            errors.append(
                error_rows(batch, result.failed, result.messages) if len(result.failed) else None
            )
            batch = result.rows
        ts, valid = event_ms(batch[self.over.order])
        cut = self.watermark.watermark_ms - self.lateness if self.watermark.known else NEVER
        cut = max(cut, self.released)
        late_at = ~valid | (ts <= cut)
        bad = np.flatnonzero(~valid)
        if len(bad):
            errors.append(
                error_rows(batch, bad, [f"event time {self.over.order} is NULL"] * len(bad))
            )
        behind = np.flatnonzero(valid & (ts <= cut))
        late = late_rows(batch, behind, None, "behind_watermark") if len(behind) else None
        kept = batch.filter(pa.array(~late_at))
        seq = np.arange(self.seq, self.seq + kept.num_rows, dtype=np.int64)
        self.seq += kept.num_rows
        self.waiting = (
            concat([self.waiting, kept.append_column(SEQ, pa.array(seq))]) or self.waiting
        )
        if valid.any():
            self.watermark = self.watermark.observe(int(ts[valid].max()), now_ms)
        out = self._release()
        return self.counters.count(StepOutput(None, out, late, concat(errors)), n)

    def on_time(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.on_time(now_ms)
        return self.counters.count(StepOutput(appends=self._release()), 0)

    def finish(self, now_ms: int) -> StepOutput:
        self.watermark = self.watermark.finish()
        return self.counters.count(StepOutput(appends=self._release()), 0)

    def _release(self) -> pa.Table:
        """Rows the watermark passed, with their aggregates (an empty table if none)."""
        none = self.query.schema.empty_table()
        if not self.watermark.known:
            return none
        through = self.watermark.watermark_ms - self.lateness
        ts, _ = event_ms(self.waiting[self.over.order])
        ready = ts <= through
        if not ready.any():
            return none
        rows = self.waiting.filter(pa.array(ready))
        self.waiting = self.waiting.filter(pa.array(~ready))
        self.released = max(self.released, int(ts[ready].max()))
        both = pa.concat_tables([
            self.history.append_column(NEW, pa.array(np.zeros(self.history.num_rows, bool))),
            rows.append_column(NEW, pa.array(np.ones(rows.num_rows, bool))),
        ])  # fmt: skip
        result = self.query.run(both)  # a failing call fails the pipeline: it is the SQL's
        self._trim(pa.concat_tables([self.history, rows]))
        return result.rows

    def _trim(self, held: pa.Table) -> None:
        """Keep what later frames can reach: the last ``rows`` per key, ``range_ms`` back."""
        keep = self.trim_sql
        if self.over.range_ms:
            keep += f' OR epoch_ms("{self.over.order}") > {self.released - self.over.range_ms}'
        con = self.query.con
        con.register("__hw_held", held)
        try:
            self.history = conform(
                con.sql(f"SELECT * FROM __hw_held QUALIFY {keep}").to_arrow_table(), held.schema
            )
        finally:
            con.unregister("__hw_held")

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark.to_dict(), "counters": self.counters.to_dict(),
                "seq": self.seq, "released": self.released}  # fmt: skip
        return pack(meta, {"waiting": self.waiting, "history": self.history})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark = self.watermark.with_state(meta["watermark"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        self.seq, self.released = int(meta["seq"]), int(meta["released"])
        self.waiting = conform(tables["waiting"], self.waiting.schema)
        self.history = conform(tables["history"], self.history.schema)

    def status(self) -> dict[str, Any]:
        held = self.waiting.num_rows + self.history.num_rows
        return {
            "watermark_ms": self.watermark.watermark_ms if self.watermark.known else None,
            "open_windows": 0,
            "oldest_open_window_end_ms": None,
            "state_rows": held,
            "state_bytes": self.waiting.nbytes + self.history.nbytes,
            **self.counters.to_dict(),
        }
