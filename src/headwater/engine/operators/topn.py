"""Window Top-N: rank each closed window's result rows, keep the rows the filter keeps.

The window aggregate below emits a window's rows once, when the watermark closes it
(``emit = 'final'``), so the ranking sees whole windows and never changes its mind; its
rows are appended. One DuckDB query per emission ranks every window it closes:

    SELECT <select> FROM (SELECT * EXCLUDE (<hidden>) REPLACE (row_number() OVER
        (PARTITION BY <partition> ORDER BY <order>, <tie break>) AS rn) FROM rows) AS t
    WHERE <filter>

Ties in ORDER BY are broken by the other result columns, in SELECT order, ascending
with NULLs last, so ``ROW_NUMBER`` is deterministic (``RANK``/``DENSE_RANK`` keep ties).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from headwater.engine.operators.base import ERROR_COLUMNS, Operator, StepOutput, concat
from headwater.engine.operators.query import BATCH, BatchQuery, quote
from headwater.engine.plan import Plan, TopN
from headwater.errors import QueryError, UnsupportedSQL


def ranking_sql(top: TopN, columns: list[str], source: str = BATCH) -> str:
    """The ranking query over ``source``'s rows, ``columns`` (hidden ones included)."""
    order = list(top.order)
    if top.func == "row_number":
        visible = [c for c in columns if c not in top.hidden and c != top.rank]
        order += [f"{quote(c)} ASC NULLS LAST" for c in visible]
    call = (
        f"{top.func}() OVER (PARTITION BY {', '.join(top.partition)} ORDER BY {', '.join(order)})"
    )
    hidden = ", ".join(quote(h) for h in top.hidden)
    ranked = f"SELECT * EXCLUDE ({hidden}) REPLACE ({call} AS {quote(top.rank)}) FROM {source}"
    sql = f"SELECT {top.select} FROM ({ranked}) AS {quote(top.alias)}"
    return sql + (f" WHERE {top.where}" if top.where else "")


def compile_top_n(plan: Plan, rows: pa.Schema) -> BatchQuery:
    """The ranking query, tried on no rows so a wrong column fails at creation."""
    assert plan.top_n is not None
    label = f"pipeline {plan.name}"
    try:
        return BatchQuery(ranking_sql(plan.top_n, rows.names), rows, None, label)
    except UnsupportedSQL:
        raise
    except Exception as exc:  # DuckDB's binder/parser errors name the problem
        raise QueryError(f"{label}: {exc}") from exc


class TopNRank:
    """Wraps the window aggregate; its state is the aggregate's."""

    def __init__(self, inner: Operator, query: BatchQuery, input_schema: pa.Schema) -> None:
        self.inner = inner
        self.query = query
        self.input_schema = input_schema

    def process(self, batch: pa.Table, now_ms: int) -> StepOutput:
        return self._rank(self.inner.process(batch, now_ms))

    def on_time(self, now_ms: int) -> StepOutput:
        return self._rank(self.inner.on_time(now_ms))

    def finish(self, now_ms: int) -> StepOutput:
        return self._rank(self.inner.finish(now_ms))

    def snapshot(self) -> bytes:
        return self.inner.snapshot()

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)

    def status(self) -> dict[str, Any]:
        return self.inner.status()

    def _rank(self, out: StepOutput) -> StepOutput:
        if out.upserts is None or out.upserts.num_rows == 0:
            return StepOutput(None, None, out.late, out.errors)
        rows, errors = rank(self.query, out.upserts, self.input_schema)
        return StepOutput(None, rows, out.late, concat([out.errors, errors]))


def rank(
    query: BatchQuery, rows: pa.Table, input_schema: pa.Schema
) -> tuple[pa.Table, pa.Table | None]:
    """The ranked rows, and error rows (in ``input_schema``) for rows the query failed on."""
    result = query.run(rows)
    if not len(result.failed):
        return result.rows, None
    messages = [f"ranking a result row failed: {m}" for m in result.messages]
    columns = [pa.nulls(len(messages), f.type) for f in input_schema]
    columns.append(pa.array(messages, pa.string()))
    schema = pa.schema([*input_schema, *ERROR_COLUMNS])
    return result.rows, pa.Table.from_arrays(columns, schema=schema)
