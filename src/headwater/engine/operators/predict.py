"""The model stage of a pipeline: each ``predict`` call's model run once per micro-batch.

The arguments are evaluated (one DuckDB query casting them to the model's input types,
or plain column reads when they are columns), each model runs on the whole batch, and
the batch goes on with one ``_pm{i}`` column per call. Rows an argument expression or a
model fails on go to the error table; the rest are scored. No state.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa

from headwater.engine.models import TYPES, Models, Scorer
from headwater.engine.operators.base import Counters, StepOutput, error_rows
from headwater.engine.operators.query import BATCH, BatchQuery, conform, quote
from headwater.engine.plan import Prediction
from headwater.engine.state import pack, unpack
from headwater.errors import BadRequest, NotFound, QueryError, UnsupportedSQL

ARROW = {duck: arrow for arrow, duck in TYPES.values()}
PLAIN = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_]*|"[^"]+")$')


def bind(models: Models, calls: tuple[Prediction, ...]) -> list[Scorer]:
    """A scorer per call, checked against its model (400 naming what to fix)."""
    out = []
    for c in calls:
        try:
            model = models.get(c.model, c.version)
        except NotFound as exc:  # a mistake in the pipeline's SQL
            raise BadRequest(str(exc), code="unknown_model") from None
        out.append(model.bind(len(c.args), c.output, c.proba))
    return out


class ModelScore:
    def __init__(
        self, calls: tuple[Prediction, ...], models: Models, input_schema: pa.Schema, label: str
    ) -> None:
        self.calls = calls
        self.input_schema = input_schema
        self.scorers = bind(models, calls)
        self.fields = [pa.field(c.column, s.type) for c, s in zip(calls, self.scorers, strict=True)]
        self.pre = None if self._direct() else self._pre_query(label)
        self.counters = Counters()

    def _direct(self) -> bool:
        names = set(self.input_schema.names)
        return all(PLAIN.match(a) and a.strip('"') in names for c in self.calls for a in c.args)

    def _pre_query(self, label: str) -> BatchQuery:
        items = [
            f"CAST({a} AS {t}) AS {quote(f'{c.column}_{j}')}"
            for c, s in zip(self.calls, self.scorers, strict=True)
            for j, (a, t) in enumerate(zip(c.args, s.arg_types, strict=True))
        ]
        sql = f"SELECT *, {', '.join(items)} FROM {BATCH}"
        try:
            return BatchQuery(sql, self.input_schema, None, label)
        except UnsupportedSQL:
            raise
        except Exception as exc:
            raise QueryError(f"{label}: {exc}") from exc

    @property
    def output_schema(self) -> pa.Schema:
        schema = self.input_schema
        for f in self.fields:
            schema = schema.append(f)
        return schema

    def _args(self, rows: pa.Table, i: int) -> list[pa.Array]:
        c, s = self.calls[i], self.scorers[i]
        if self.pre is not None:
            return [rows[f"{c.column}_{j}"].combine_chunks() for j in range(len(c.args))]
        types = [ARROW[t] for t in s.arg_types]
        return [
            rows[a.strip('"')].combine_chunks().cast(t, safe=False)
            for a, t in zip(c.args, types, strict=True)
        ]

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        batch = conform(batch, self.input_schema)
        errors, rows = [], batch
        if self.pre is not None:
            result = self.pre.run(batch)
            if len(result.failed):
                errors.append(error_rows(batch, result.failed, result.messages))
            rows = result.rows
        cols, failed = [], np.zeros(rows.num_rows, dtype=bool)
        messages: dict[int, str] = {}
        for i, scorer in enumerate(self.scorers):
            values, failures = scorer.run(self._args(rows, i))
            for row, message in failures:
                failed[row] = True
                messages.setdefault(row, message)
            cols.append(values)
        out = rows.select(self.input_schema.names)
        for f, col in zip(self.fields, cols, strict=True):
            out = out.append_column(f, col)
        if failed.any():
            bad = np.flatnonzero(failed)
            errors.append(error_rows(out.select(self.input_schema.names), bad,
                                     [messages[int(r)] for r in bad]))  # fmt: skip
            out = out.filter(pa.array(~failed))
        err = pa.concat_tables(errors) if errors else None
        return self.counters.count(StepOutput(appends=out, errors=err), batch.num_rows)

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
