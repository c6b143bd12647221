"""The scoring stage of a pipeline with anomaly functions: per-key statistics, per row.

Rows pass the pipeline's WHERE, then each key's rows of the batch are scored in
event-time order against that key's history, and the history is updated. Scores are
computed on arrival (no waiting for the watermark): a row arriving after later rows of
its key is scored against the history so far. The batch goes on with one ``_an{i}``
column per call, for the pipeline's projection and ``QUALIFY``.

State: per statistic, the keys seen (strings) and their count, mean and variance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.anomaly.scores import Stats, ewm, score01, welford
from headwater.engine.anomaly.segments import F64, Segments
from headwater.engine.operators.base import Counters, StepOutput, error_rows, event_ms
from headwater.engine.operators.query import BATCH, BatchQuery, conform, quote
from headwater.engine.plan import Score, Scoring
from headwater.engine.state import pack, unpack

KEY, TIME = "_ankey", "_ants"
SEASON_SQL = {
    "hour_of_day": "hour({t})",
    "day_of_week": "isodow({t})",
    "hour_of_week": "(isodow({t}) - 1) * 24 + hour({t})",
}


def stat_kind(s: Score) -> str:
    """Which statistics a call needs: one state per distinct kind, shared by the calls."""
    if s.func in ("ewma", "ewma_zscore") or (
        s.func in ("anomaly_score", "is_anomaly") and s.method == "ewma"
    ):
        return f"ewm:{s.alpha:g}"
    if s.func == "seasonal_zscore":
        return f"season:{s.season}"
    return "welford"


@dataclass
class KeyStats:
    """Keys (strings) to slots, and the statistics of each slot."""

    keys: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    stats: Stats = field(default_factory=Stats.empty)

    def slots(self, keys: pa.Array) -> np.ndarray:
        found = pc.index_in(keys, value_set=self.keys)
        if found.null_count:
            new = pc.unique(keys.filter(pc.is_null(found)))
            self.keys = pa.concat_arrays([self.keys, new])
            self.stats.grow(len(self.keys))
            found = pc.index_in(keys, value_set=self.keys)
        return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)


class AnomalyScore:
    def __init__(self, scoring: Scoring, input_schema: pa.Schema, label: str) -> None:
        self.scoring = scoring
        self.input_schema = input_schema
        t = quote(scoring.order)
        part = ", ".join(f"coalesce(CAST({p} AS VARCHAR), chr(0))" for p in scoring.partition)
        key = f"concat_ws(chr(31), {part})" if part else "''"
        values = [f"CAST({s.value} AS DOUBLE) AS _av{i}" for i, s in enumerate(scoring.scores)]
        seasons = {s.season for s in scoring.scores if s.season}
        values += [f"{SEASON_SQL[z].format(t=t)}::VARCHAR AS _as_{z}" for z in sorted(seasons)]
        sql = f"SELECT *, {key} AS {KEY}, {t} AS {TIME}, {', '.join(values)} FROM {BATCH}"
        if scoring.filter:
            sql += f" WHERE {scoring.filter}"
        self.pre = BatchQuery(sql, input_schema, None, label)
        self.state: dict[str, KeyStats] = {stat_kind(s): KeyStats() for s in scoring.scores}
        self.columns = [pa.field(s.column, pa.bool_() if s.func == "is_anomaly" else pa.float64())
                        for s in scoring.scores]  # fmt: skip
        self.counters = Counters()

    @property
    def output_schema(self) -> pa.Schema:
        schema = self.input_schema
        for f in self.columns:
            schema = schema.append(f)
        return schema

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.input_schema)
        result = self.pre.run(batch)
        errors = error_rows(batch, result.failed, result.messages) if len(result.failed) else None
        rows = result.rows
        ts, has_time = event_ms(rows[TIME])
        cols = self._score(rows, ts, has_time)
        out = rows.select(self.input_schema.names)
        for f, values in zip(self.columns, cols, strict=True):
            out = out.append_column(f, values)
        return self.counters.count(StepOutput(appends=out, errors=errors), batch.num_rows)

    def _score(self, rows: pa.Table, ts: np.ndarray, has_time: np.ndarray) -> list[pa.Array]:
        keys = rows[KEY].combine_chunks()
        done: dict[str, tuple[F64, F64, F64]] = {}  # stat kind -> (z, smoothed, seen before)
        out = []
        for i, s in enumerate(self.scoring.scores):
            x = rows[f"_av{i}"].to_numpy(zero_copy_only=False).astype(np.float64)
            kind = stat_kind(s)
            z, smooth, seen = self._stats(kind, s, keys, rows, x, ts, has_time, done)
            z = np.where(seen >= s.warmup, z, np.nan)
            if s.func == "ewma":
                values = smooth
            elif s.func == "anomaly_score":
                values = score01(z)
            elif s.func == "is_anomaly":
                out.append(pa.array(np.nan_to_num(np.abs(z), nan=0.0) > s.threshold))
                continue
            else:
                values = z
            out.append(pa.array(values, pa.float64(), from_pandas=True))
        return out

    def _stats(
        self, kind: str, s: Score, keys: pa.Array, rows: pa.Table, x: F64,
        ts: np.ndarray, has_time: np.ndarray, done: dict[str, tuple[F64, F64, F64]],
    ) -> tuple[F64, F64, F64]:  # fmt: skip
        """(z, smoothed, values seen before) per row for a stat kind; computed once per
        batch, rows with no value or time are scored null and leave the history as it was."""
        if kind in done:
            return done[kind]
        z, smooth = np.full(len(x), np.nan), np.full(len(x), np.nan)
        seen = np.zeros(len(x))
        use = ~np.isnan(x) & has_time
        rows_used = np.flatnonzero(use)
        if len(rows_used):
            k = keys.take(pa.array(rows_used))
            if s.season:
                k = pc.binary_join_element_wise(
                    k, rows[f"_as_{s.season}"].take(pa.array(rows_used)).combine_chunks(), "\x1e"
                )
            state = self.state[kind]
            seg = Segments.of(state.slots(k), ts[rows_used])
            xs = x[rows_used][seg.order]
            at = rows_used[seg.order]
            if kind.startswith("ewm"):
                smooth[at], z[at], seen[at] = ewm(xs, seg, state.stats, s.alpha)
            else:
                z[at], seen[at] = welford(xs, seg, state.stats)
        done[kind] = (z, smooth, seen)
        return z, smooth, seen

    def on_time(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def snapshot(self) -> bytes:
        tables = {
            kind: pa.table(
                {"key": ks.keys, "n": ks.stats.n, "mean": ks.stats.mean, "var": ks.stats.var}
            )
            for kind, ks in self.state.items()
        }
        return pack({"counters": self.counters.to_dict()}, tables)

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.counters = Counters()
        self.counters.load(meta["counters"])
        for kind, t in tables.items():
            if kind in self.state:
                stats = Stats(
                    *(t[c].to_numpy().astype(np.float64).copy() for c in ("n", "mean", "var"))
                )
                self.state[kind] = KeyStats(t["key"].combine_chunks(), stats)

    def status(self) -> dict[str, Any]:
        keys = sum(len(ks.keys) for ks in self.state.values())
        return {"watermark_ms": None, "state_rows": keys, "state_bytes": keys * 40,
                **self.counters.to_dict()}  # fmt: skip
