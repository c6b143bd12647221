"""Interval and regular joins of two streams: each side's rows wait for the other's.

A batch of one side is joined (one DuckDB query, the ON condition as written) with the
rows the other side keeps, then kept itself. The graph hands the join the minimum of
its two inputs' watermarks (``on_watermark``); with ``cut = watermark -
allowed_lateness``:

- a row with event time before ``cut`` is late (``_reason = 'behind_watermark'``): a
  row it should have met may be gone;
- a left row is dropped once no right row that is not late can match it (interval:
  ``ts - lower < cut``; regular: ``ts + ttl < cut``), a right row likewise (interval:
  ``ts + upper < cut``). A LEFT JOIN then emits a left row that met nothing, with NULLs.

So each matching pair is emitted once, when the later of its two rows arrives, and the
result equals the batch join of the rows that were not late. The join's own watermark
(what follows it may rely on) is the smaller of ``cut`` and the oldest row it keeps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.graph import OperatorKind, OperatorStatus
from headwater.engine.join_spec import JoinSide, StreamJoin
from headwater.engine.operators.base import (
    Counters,
    StepOutput,
    concat,
    error_rows,
    event_ms,
    late_rows,
)
from headwater.engine.operators.query import BATCH, BatchQuery, conform, quote
from headwater.engine.state import pack, unpack
from headwater.engine.watermark import NO_WATERMARK

KINDS = {"interval": OperatorKind.INTERVAL_JOIN, "regular": OperatorKind.REGULAR_JOIN,
         "window": OperatorKind.WINDOW_JOIN}  # fmt: skip
TS, SEQ, MATCHED = "_hw_ts", "_hw_seq", "_hw_matched"
OTHER = "__hw_other"
LEFT_SEQ = "__hw_lseq"
MAX_CHUNKS = 32
SideRows = Callable[[pa.Table, int], pa.Table]  # late/error rows of a side (port) → pipeline's


@dataclass(frozen=True, slots=True)
class JoinInput:
    side: JoinSide
    schema: pa.Schema  # the stream's columns

    @property
    def held(self) -> pa.Schema:
        return self.schema.append(pa.field(TS, pa.int64())).append(pa.field(SEQ, pa.int64()))


def joined_columns(left: JoinInput, right: JoinInput) -> list[tuple[str, str, pa.Field]]:
    """(alias, column, field named ``alias.column``) of the joined rows, left then right."""
    out = []
    for side in (left, right):
        for f in side.schema:
            out.append((side.side.alias, f.name, pa.field(f"{side.side.alias}.{f.name}", f.type)))
    return out


def with_bare_names(schema: pa.Schema) -> pa.Schema:
    """The joined columns (``alias.column``), then the bare names only one side has."""
    counts = Counter(f.name.split(".", 1)[1] for f in schema)
    bare = [pa.field(f.name.split(".", 1)[1], f.type) for f in schema
            if counts[f.name.split(".", 1)[1]] == 1]  # fmt: skip
    return pa.schema([*schema, *bare])


def add_bare(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table``'s joined columns, plus the bare-named ones of ``schema`` (the same arrays)."""
    by_bare = {n.split(".", 1)[1]: n for n in table.column_names}
    for f in schema:
        if f.name not in table.column_names:
            table = table.append_column(f, table[by_bare[f.name]])
    return table


class StreamJoinOperator:
    driven = True

    def __init__(
        self,
        spec: StreamJoin,
        inputs: tuple[JoinInput, JoinInput],
        lateness_ms: int,
        side_rows: SideRows,
        label: str,
    ) -> None:
        self.kind = KINDS[spec.kind]
        self.spec = spec
        self.inputs = inputs
        self.lateness = lateness_ms
        self.side_rows = side_rows
        self.held = [inputs[0].held.append(pa.field(MATCHED, pa.bool_())).empty_table(),
                     inputs[1].held.empty_table()]  # fmt: skip
        self.watermark = NO_WATERMARK
        # a stream joined with itself: both sides get each batch, judged by the same cut,
        # so the second side's late and error rows would repeat the first's
        self.echo = spec.left.stream == spec.right.stream and spec.kind != "window"
        self.seq = 0
        self.counters = Counters()
        items = [f"{quote(a)}.{quote(c)} AS {quote(f.name)}" for a, c, f in joined_columns(*inputs)]
        items.append(f"{quote(spec.left.alias)}.{SEQ} AS {LEFT_SEQ}")
        left, right = quote(spec.left.alias), quote(spec.right.alias)
        select = f"SELECT {', '.join(items)} FROM "
        on = f" ON {spec.condition}"
        self.queries = (
            BatchQuery(select + f"{BATCH} AS {left} JOIN {OTHER} AS {right}" + on,
                       self._batch_schema(0), lambda: {OTHER: self.held[1]}, label),
            BatchQuery(select + f"{OTHER} AS {left} JOIN {BATCH} AS {right}" + on,
                       self._batch_schema(1), lambda: {OTHER: self.held[0]}, label),
        )  # fmt: skip
        pairs = self.queries[0].schema
        self.output_schema = with_bare_names(pairs.remove(pairs.get_field_index(LEFT_SEQ)))

    def _batch_schema(self, port: int) -> pa.Schema:
        return self.inputs[port].held

    @property
    def cut(self) -> int:
        return self.watermark - self.lateness if self.watermark != NO_WATERMARK else NO_WATERMARK

    def process(self, port: int, batch: pa.Table, now_ms: int) -> StepOutput:
        side = self.inputs[port]
        batch = conform(batch, side.schema)
        n = batch.num_rows
        ts, valid = event_ms(batch[side.side.time_column])
        errors, late = [], []
        if not valid.all():
            bad = np.flatnonzero(~valid)
            message = f"event time {side.side.alias}.{side.side.time_column} is NULL"
            errors.append(self.side_rows(error_rows(batch, bad, [message] * len(bad)), port))
        behind = valid & (ts < self.cut)
        if behind.any():
            rows = late_rows(batch, np.flatnonzero(behind), None, "behind_watermark")
            late.append(self.side_rows(rows, port))
        keep = valid & ~behind
        rows = batch.filter(pa.array(keep)) if not keep.all() else batch
        seq = np.arange(self.seq, self.seq + rows.num_rows, dtype=np.int64)
        self.seq += rows.num_rows
        rows = rows.append_column(TS, pa.array(ts[keep])).append_column(SEQ, pa.array(seq))
        result = self.queries[port].run(rows)
        if len(result.failed):
            errors.append(self.side_rows(error_rows(batch, result.failed, result.messages), port))
        matched = result.rows[LEFT_SEQ].to_numpy()
        if port == 0:
            rows = rows.append_column(MATCHED, pa.array(np.isin(seq, matched)))
        elif self.spec.how == "left" and len(matched):
            held = self.held[0]
            now = np.isin(held[SEQ].to_numpy(), matched) | held[MATCHED].to_numpy()
            self.held[0] = held.set_column(held.num_columns - 1, MATCHED, pa.array(now))
        held = pa.concat_tables([self.held[port], rows])
        # one chunk per batch would make every later join scan many small chunks
        self.held[port] = held.combine_chunks() if held[SEQ].num_chunks > MAX_CHUNKS else held
        pairs = add_bare(result.rows.drop_columns([LEFT_SEQ]), self.output_schema)
        if port == 1 and self.echo:
            late, errors = [], []
        out = StepOutput(appends=pairs, late=concat(late),
                         errors=concat(errors))  # fmt: skip
        return self.counters.count(out, n)

    def on_watermark(self, watermark_ms: int, now_ms: int) -> StepOutput:
        """Drop the rows nothing can match any more; a LEFT JOIN emits the unmatched ones."""
        self.watermark = max(self.watermark, watermark_ms)
        cut = self.cut
        spec = self.spec
        left, right = self.held
        lts, rts = left[TS].to_numpy(), right[TS].to_numpy()
        if spec.kind == "interval":
            gone_l, gone_r = lts - spec.lower_ms < cut, rts + spec.upper_ms < cut
        else:
            gone_l, gone_r = lts + spec.ttl_ms < cut, rts + spec.ttl_ms < cut
        out = StepOutput()
        if spec.how == "left" and gone_l.any():
            lonely = gone_l & ~left[MATCHED].to_numpy()
            if lonely.any():
                out = StepOutput(appends=self._unmatched(left.filter(pa.array(lonely))))
        if gone_l.any():
            self.held[0] = left.filter(pa.array(~gone_l))
        if gone_r.any():
            self.held[1] = right.filter(pa.array(~gone_r))
        return self.counters.count(out, 0)

    def _unmatched(self, rows: pa.Table) -> pa.Table:
        """Left rows with NULL right columns, as the joined rows."""
        columns = []
        for alias, column, f in joined_columns(*self.inputs):
            if alias == self.spec.left.alias:
                columns.append(rows[column])
            else:
                columns.append(pa.nulls(rows.num_rows, f.type))
        names = [f.name for _, _, f in joined_columns(*self.inputs)]
        table = pa.Table.from_arrays(columns, names=names)
        return conform(add_bare(table, self.output_schema), self.output_schema)

    def watermark_ms(self) -> int | None:
        if self.watermark == NO_WATERMARK:
            return None
        oldest = [int(t[TS].to_numpy().min()) for t in self.held if t.num_rows]
        return min([self.cut, *oldest])

    def on_time(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def snapshot(self) -> bytes:
        meta = {"watermark": self.watermark, "seq": self.seq, "counters": self.counters.to_dict()}
        return pack(meta, {"left": self.held[0], "right": self.held[1]})

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.watermark, self.seq = int(meta["watermark"]), int(meta["seq"])
        self.counters = Counters()
        self.counters.load(meta["counters"])
        self.held = [conform(tables["left"], self.held[0].schema),
                     conform(tables["right"], self.held[1].schema)]  # fmt: skip

    def status(self) -> OperatorStatus:
        rows = sum(t.num_rows for t in self.held)
        info: dict[str, Any] = {"watermark_ms": self.watermark_ms(), "state_rows": rows,
                                "state_bytes": sum(t.nbytes for t in self.held)}  # fmt: skip
        return OperatorStatus.of(self.kind, {**info, **self.counters.to_dict()})
