"""The scoring stage of a pipeline with anomaly functions: per-key statistics, per row.

Rows pass the pipeline's WHERE, then each key's rows of the batch are scored in
event-time order against that key's history, and the history is updated. Scores are
computed on arrival (no waiting for the watermark): a row arriving after later rows of
its key is scored against the history so far. The batch goes on with one ``_an{i}``
column per call, for the pipeline's projection and ``QUALIFY``.

State: per statistic, the keys seen (strings) and their count, mean and variance.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.anomaly.cusum import CusumState, cusum
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
    if s.func == "cusum" or (s.func in ("anomaly_score", "is_anomaly") and s.method == "cusum"):
        return f"cusum:{s.slack:g}:{s.threshold:g}:{s.warmup}"
    if s.func in ("ewma", "ewma_zscore") or (
        s.func in ("anomaly_score", "is_anomaly") and s.method == "ewma"
    ):
        return f"ewm:{s.alpha:g}"
    if s.func == "seasonal_zscore":
        return f"season:{s.season}"
    return "welford"


class KeySpace:
    """Keys (strings) to slots: one space for the plain keys, one per seasonal bucketing."""

    def __init__(self, keys: pa.Array | None = None) -> None:
        self.keys: pa.Array = keys if keys is not None else pa.array([], pa.string())

    def slots(self, keys: pa.Array) -> np.ndarray:
        found = pc.index_in(keys, value_set=self.keys)
        if found.null_count:
            new = pc.unique(keys.filter(pc.is_null(found)))
            self.keys = pa.concat_arrays([self.keys, new])
            found = pc.index_in(keys, value_set=self.keys)
        return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.int64)


PLAIN = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_]*|"[^"]+")$')


class AnomalyScore:
    def __init__(self, scoring: Scoring, input_schema: pa.Schema, label: str) -> None:
        self.scoring = scoring
        self.input_schema = input_schema
        self.pre = None if self._direct() else self._pre_query(label)
        self.spaces: dict[str, KeySpace] = {s.season or "": KeySpace() for s in scoring.scores}
        self.stats: dict[str, Stats | CusumState] = {
            k: CusumState.empty() if k.startswith("cusum") else Stats.empty()
            for k in map(stat_kind, scoring.scores)
        }
        self.columns = [pa.field(s.column, pa.bool_() if s.func == "is_anomaly" else pa.float64())
                        for s in scoring.scores]  # fmt: skip
        self.counters = Counters()

    def _direct(self) -> bool:
        """Whether the keys, values and time are plain columns (read without a query)."""
        names = set(self.input_schema.names)
        exprs = [*self.scoring.partition, *(s.value for s in self.scoring.scores)]
        plain = all(PLAIN.match(e) and e.strip('"') in names for e in exprs)
        seasons = any(s.season for s in self.scoring.scores)
        return plain and not seasons and self.scoring.filter is None

    def _pre_query(self, label: str) -> BatchQuery:
        scoring = self.scoring
        t = quote(scoring.order)
        part = ", ".join(f"coalesce(CAST({p} AS VARCHAR), chr(0))" for p in scoring.partition)
        key = f"concat_ws(chr(31), {part})" if part else "''"
        values = [f"CAST({s.value} AS DOUBLE) AS _av{i}" for i, s in enumerate(scoring.scores)]
        seasons = {s.season for s in scoring.scores if s.season}
        values += [f"{SEASON_SQL[z].format(t=t)}::VARCHAR AS _as_{z}" for z in sorted(seasons)]
        sql = f"SELECT *, {key} AS {KEY}, {t} AS {TIME}, {', '.join(values)} FROM {BATCH}"
        if scoring.filter:
            sql += f" WHERE {scoring.filter}"
        return BatchQuery(sql, self.input_schema, None, label)

    @property
    def output_schema(self) -> pa.Schema:
        schema = self.input_schema
        for f in self.columns:
            schema = schema.append(f)
        return schema

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.input_schema)
        errors = None
        if self.pre is None:
            rows, keys, values = batch, self._keys(batch), self._values(batch)
        else:
            result = self.pre.run(batch)
            if len(result.failed):
                errors = error_rows(batch, result.failed, result.messages)
            rows = result.rows
            keys = rows[KEY].combine_chunks()
            values = [rows[f"_av{i}"] for i in range(len(self.scoring.scores))]
        ts, has_time = event_ms(rows[self.scoring.order if self.pre is None else TIME])
        cols = self._score(rows, keys, values, ts, has_time)
        out = rows.select(self.input_schema.names)
        for f, col in zip(self.columns, cols, strict=True):
            out = out.append_column(f, col)
        return self.counters.count(StepOutput(appends=out, errors=errors), batch.num_rows)

    def _keys(self, batch: pa.Table) -> pa.Array:
        parts = [
            pc.fill_null(batch[p.strip('"')].combine_chunks().cast(pa.string()), "\x00")
            for p in self.scoring.partition
        ]
        if not parts:
            return pa.array([""] * batch.num_rows, pa.string())
        return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, "\x1f")

    def _values(self, batch: pa.Table) -> list[pa.ChunkedArray | pa.Array]:
        return [batch[s.value.strip('"')].cast(pa.float64()) for s in self.scoring.scores]

    def _score(
        self,
        rows: pa.Table,
        keys: pa.Array,
        values: list[Any],
        ts: np.ndarray,
        has_time: np.ndarray,
    ) -> list[pa.Array]:
        done: dict[str, tuple[F64, F64, F64]] = {}  # stat kind -> (z, smoothed, seen before)
        layouts: dict[tuple[str, bytes], tuple[np.ndarray, Segments]] = {}
        out = []
        for s, col in zip(self.scoring.scores, values, strict=True):
            x = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)
            kind = stat_kind(s)
            if kind not in done:
                done[kind] = self._stats(kind, s, keys, rows, x, ts, has_time, layouts)
            z, smooth, seen = done[kind]
            z = np.where(seen >= s.warmup, z, np.nan)
            if s.func == "is_anomaly":
                out.append(pa.array(np.nan_to_num(np.abs(z), nan=0.0) > s.threshold))
                continue
            if s.func == "anomaly_score":
                result = np.minimum(z / s.threshold, 1.0) if kind[0] == "c" else score01(z)
            else:
                result = smooth if s.func == "ewma" else z
            out.append(pa.array(result, pa.float64(), from_pandas=True))
        return out

    def _stats(
        self, kind: str, s: Score, keys: pa.Array, rows: pa.Table, x: F64, ts: np.ndarray,
        has_time: np.ndarray, layouts: dict[tuple[str, bytes], tuple[np.ndarray, Segments]],
    ) -> tuple[F64, F64, F64]:  # fmt: skip
        """(z, smoothed, values seen before) per row for a stat kind. Rows with no value or
        time are scored null and leave the history as it was."""
        z, smooth, seen = np.full(len(x), np.nan), np.full(len(x), np.nan), np.zeros(len(x))
        use = ~np.isnan(x) & has_time
        mask = use.tobytes() if not use.all() else b""
        space = s.season or ""
        layout = layouts.get((space, mask))
        if layout is None:
            rows_used = np.flatnonzero(use)
            k = keys if not mask else keys.take(pa.array(rows_used))
            if s.season:
                bucket = rows[f"_as_{s.season}"].combine_chunks()
                bucket = bucket if not mask else bucket.take(pa.array(rows_used))
                k = pc.binary_join_element_wise(k, bucket, "\x1e")
            seg = Segments.of(self.spaces[space].slots(k), ts[rows_used])
            layout = layouts[(space, mask)] = (rows_used, seg)
        rows_used, seg = layout
        if not len(rows_used):
            return z, smooth, seen
        stats = self.stats[kind]
        stats.grow(len(self.spaces[space].keys))
        at = rows_used[seg.order] if mask else seg.order
        xs = x[at]
        if isinstance(stats, CusumState):
            z[at], seen[at] = cusum(xs, seg, stats, s.slack, s.threshold, s.warmup)
        elif kind.startswith("ewm"):
            smooth[at], z[at], seen[at] = ewm(xs, seg, stats, s.alpha)
        else:
            z[at], seen[at] = welford(xs, seg, stats)
        return z, smooth, seen

    def on_time(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def finish(self, now_ms: int) -> StepOutput:
        return StepOutput()

    def snapshot(self) -> bytes:
        tables = {f"space:{name}": pa.table({"key": sp.keys}) for name, sp in self.spaces.items()}
        for kind, st in self.stats.items():
            cols = st.columns() if isinstance(st, CusumState) else {"n": st.n, "mean": st.mean,
                                                                    "var": st.var}  # fmt: skip
            tables[f"stat:{kind}"] = pa.table(cols)
        return pack({"counters": self.counters.to_dict()}, tables)

    def restore(self, data: bytes) -> None:
        meta, tables = unpack(data)
        self.counters = Counters()
        self.counters.load(meta["counters"])
        for name, t in tables.items():
            what, _, key = name.partition(":")
            if what == "space" and key in self.spaces:
                self.spaces[key] = KeySpace(t["key"].combine_chunks())
            elif what == "stat" and key in self.stats:
                cols = [t[c].to_numpy().astype(np.float64).copy() for c in t.column_names]
                self.stats[key] = CusumState(*cols) if key.startswith("cusum") else Stats(*cols)

    def status(self) -> dict[str, Any]:
        keys = sum(len(sp.keys) for sp in self.spaces.values())
        state = sum(len(st.n) for st in self.stats.values())
        return {"watermark_ms": None, "state_rows": state, "state_bytes": state * 24 + keys * 16,
                **self.counters.to_dict()}  # fmt: skip
