"""From a plan and the input's Arrow schema to the runnable pieces of a pipeline.

The row queries are tried on empty tables here, so a pipeline that names an unknown
column, compares a string with a number or aggregates a string fails when it is
created, with DuckDB's message, not on the first batch. The output schema falls out of
the same queries, so it is exactly what the pipeline will produce.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from headwater.engine.aggregates.int128 import WIDE
from headwater.engine.aggregates.kernels import make_kernel
from headwater.engine.aggregates.table import Aggregation
from headwater.engine.operators.query import (
    BATCH,
    ROW,
    BatchQuery,
    ColumnPick,
    QueryResult,
    TableSource,
    quote,
)
from headwater.engine.plan import WINDOW_END, WINDOW_START, WINDOW_TYPE, Column, Plan
from headwater.engine.received import with_received_at
from headwater.errors import QueryError, UnsupportedSQL


class RowQuery(Protocol):
    schema: pa.Schema

    def run(self, batch: pa.Table) -> QueryResult: ...


@dataclass(frozen=True, slots=True)
class Compiled:
    plan: Plan
    input_schema: pa.Schema
    rows: RowQuery  # stateless: the whole query; stateful: the pre-aggregation query
    aggregation: Aggregation | None
    post: RowQuery | None  # stateful: the projection over aggregated rows
    key_fields: tuple[pa.Field, ...]
    output_schema: pa.Schema
    top_n: RowQuery | None = None  # Top-N: the ranking over ``post``'s rows


def ref_name(i: int) -> str:
    return f"__hw_ref_{i}"


def compile_plan(
    plan: Plan,
    input_schema: pa.Schema,
    references: Mapping[str, pa.Schema],
    tables: TableSource | None = None,
) -> Compiled:
    """Build the queries and kernels; ``tables`` supplies reference tables per batch."""
    if plan.pattern is not None:
        from headwater.engine.operators.pattern import compile_pattern_plan

        return compile_pattern_plan(plan, with_received_at(plan.sql, input_schema))
    input_schema = with_received_at(plan.sql, input_schema)
    _check_time_columns(plan, input_schema)
    if plan.scoring is not None:  # the projection reads the scores too
        for s in plan.scoring.scores:
            kind = pa.bool_() if s.func == "is_anomaly" else pa.float64()
            input_schema = input_schema.append(pa.field(s.column, kind))
    if plan.over is not None:  # the projection reads the OVER aggregates too
        from headwater.engine.operators.over import over_query

        input_schema = _checked_over(plan, input_schema, over_query)
    if plan.top_n is not None and not plan.grouped:
        from headwater.engine.operators.topn_rows import compile_ranked_rows

        return compile_ranked_rows(plan, input_schema)
    missing = [t for t in plan.references if t not in references]
    if missing:
        raise QueryError(f"pipeline {plan.name}: unknown reference table(s) {', '.join(missing)}")
    empty = {ref_name(i): references[j.table].empty_table() for i, j in enumerate(plan.joins)}
    source: TableSource = tables or (lambda: empty)
    if not plan.grouped:
        rows = _rows_query(plan, plan.projection, input_schema, source, with_row=False)
        return Compiled(plan, input_schema, rows, None, None, (), rows.schema)
    row_schema = input_schema.append(pa.field(ROW, pa.int64()))
    pre = _rows_query(plan, plan.pre, row_schema, source, with_row=True)
    types = {f.name: f.type for f in pre.schema}
    for a in plan.aggregates:
        try:
            make_kernel(a.func, [types[x] for x in a.args], a.param)
        except TypeError as exc:
            raise UnsupportedSQL(
                f"{a.sql} at {a.position}: {exc}", construct=a.sql, position=a.position
            ) from exc
    aggregation = Aggregation(plan.aggregates, types)
    keys = tuple(pre.schema.field(k.name) for k in plan.keys)
    window = [pa.field(WINDOW_START, WINDOW_TYPE), pa.field(WINDOW_END, WINDOW_TYPE)]
    agg_schema = pa.schema([*keys, *(window if plan.window else []), *aggregation.output_fields])
    wide = [
        f.name
        for a, f in zip(plan.aggregates, aggregation.output_fields, strict=True)
        if a.func == "sum" and f.type == WIDE
    ]
    post = _post_query(plan, agg_schema, wide)
    if plan.top_n is not None:
        from headwater.engine.operators.topn import compile_top_n

        ranked = compile_top_n(plan, post.schema)
        return Compiled(plan, input_schema, pre, aggregation, post, keys, ranked.schema, ranked)
    return Compiled(plan, input_schema, pre, aggregation, post, keys, post.schema)


def _checked_over(plan: Plan, schema: pa.Schema, build: Any) -> pa.Schema:
    assert plan.over is not None
    label = f"pipeline {plan.name}"
    try:
        return build(plan.over, schema, label).schema
    except UnsupportedSQL:
        raise
    except Exception as exc:  # DuckDB's binder errors name the problem
        raise QueryError(f"{label}: {exc}") from exc


def _check_time_columns(plan: Plan, schema: pa.Schema) -> None:
    times = [plan.window.time_column] if plan.window is not None else []
    ids = []
    if plan.dedup is not None:
        times.append(plan.dedup.time_column)
        ids.append(plan.dedup.id_column)
    for name in times + ids:
        if name not in schema.names:
            raise QueryError(f"pipeline {plan.name}: stream {plan.source} has no column {name!r}")
    for name in times:
        t = schema.field(name).type
        if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
            raise QueryError(
                f"pipeline {plan.name}: time column {name!r} is {t}; "
                "use a timestamp (or integer epoch-ms) column"
            )


def compile_rows(plan: Plan, columns: tuple[Column, ...], schema: pa.Schema) -> RowQuery:
    """The projection (and WHERE) of ``plan`` over rows of ``schema``, with no joins."""
    return _rows_query(plan, columns, schema, lambda: {}, with_row=False)


def _rows_query(
    plan: Plan,
    columns: tuple[Column, ...],
    schema: pa.Schema,
    tables: TableSource,
    with_row: bool,
) -> RowQuery:
    label = f"pipeline {plan.name}"
    simple = all(c.source is not None and c.source in schema.names for c in columns)
    if not plan.joins and plan.filter is None and simple:
        picks = [(c.name, str(c.source)) for c in columns]
        return ColumnPick([("_row", ROW), *picks] if with_row else picks, schema)
    alias = quote(plan.source_alias)
    items = [f"{alias}.{quote(ROW)} AS _row"] if with_row else []
    items += [c.expr if c.name == "*" else f"{c.expr} AS {quote(c.name)}" for c in columns]
    sql = f"SELECT {', '.join(items)} FROM {BATCH} AS {alias}"
    for i, j in enumerate(plan.joins):
        side = "LEFT JOIN" if j.kind == "left" else "JOIN"
        sql += f" {side} {ref_name(i)} AS {quote(j.alias)} {j.condition}"
    if plan.filter is not None:
        sql += f" WHERE {plan.filter}"
    return _checked(BatchQuery, sql, schema, tables, label)


def _post_query(plan: Plan, agg_schema: pa.Schema, wide: list[str]) -> RowQuery:
    """The projection over aggregated rows; integer sums enter it as HUGEINT, as in DuckDB
    (a DECIMAL(38, 0) would turn ``sum(x) // 2`` into a DOUBLE)."""
    if plan.having is None and all(c.source for c in plan.projection):
        return ColumnPick([(c.name, str(c.source)) for c in plan.projection], agg_schema)
    items = ", ".join(f"{c.expr} AS {quote(c.name)}" for c in plan.projection)
    source = BATCH
    if wide:
        casts = ", ".join(f"{quote(name)}::HUGEINT AS {quote(name)}" for name in wide)
        source = f"(SELECT * REPLACE ({casts}) FROM {BATCH}) AS {BATCH}"
    sql = f"SELECT {items} FROM {source}"
    if plan.having is not None:
        sql += f" WHERE {plan.having}"
    return _checked(BatchQuery, sql, agg_schema, None, f"pipeline {plan.name}")


def _checked(
    cls: type[BatchQuery], sql: str, schema: pa.Schema, tables: TableSource | None, label: str
) -> BatchQuery:
    try:
        return cls(sql, schema, tables, label)
    except UnsupportedSQL:
        raise
    except Exception as exc:  # DuckDB's binder/parser errors name the problem
        raise QueryError(f"{label}: {exc}") from exc
