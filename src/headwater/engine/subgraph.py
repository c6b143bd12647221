"""The nodes of any plan: a stream's chain, a join of two inputs, or a plan over the
result rows of an inner plan (a subquery in FROM, or another pipeline).

``build_nodes`` recurses: an inner plan's nodes come first (their names prefixed, so
state is saved per node), then the outer chain reads the inner plan's last node and is
driven by its watermark. Late and error rows of every node are conformed to the late
and error schema of the whole pipeline: its stream's columns (for a join, both
streams' and ``_stream``), with the columns a node lacks left NULL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import pyarrow as pa

from headwater.engine.chain import build_chain
from headwater.engine.compile import Compiled
from headwater.engine.graph import Node
from headwater.engine.models import Models
from headwater.engine.operators.base import ERROR_COLUMNS, LATE_COLUMNS
from headwater.engine.plan import Plan
from headwater.engine.received import with_received_at
from headwater.engine.references import ReferenceTables
from headwater.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Built:
    nodes: list[Node]
    compiled: Compiled
    input_schemas: dict[str, pa.Schema]
    late_schema: pa.Schema  # the late/error tables' columns, before their own

    @property
    def sink(self) -> str:
        return self.nodes[-1].name


def build_nodes(
    plan: Plan,
    schemas: Mapping[str, pa.Schema],
    refs: ReferenceTables,
    models: Models | None = None,
    prefix: str = "",
) -> Built:
    if plan.inner is not None:
        inner = build_nodes(plan.inner, schemas, refs, models, f"{prefix}in.")
        late = inner.late_schema

        def side(table: pa.Table | None) -> pa.Table | None:
            return None if table is None else conform_side(table, late)

        outer = replace(plan, inner=None, dedup=None)
        # rows of a filter/projection of a stream come as the stream's did: the outer
        # operators time themselves on them; after windows or a join they follow the
        # inner watermark
        chain = build_chain(outer, inner.compiled.output_schema, refs, models,
                            upstream=inner.sink, prefix=prefix, side=side,
                            driven=has_watermark(plan.inner))  # fmt: skip
        return Built(inner.nodes + chain.nodes, chain.compiled, inner.input_schemas, late)
    if plan.stream_join is not None:
        from headwater.engine.joins import build_join_graph

        return build_join_graph(plan, schemas, refs, models, prefix)
    if plan.source not in schemas:
        raise BadRequest(f"pipeline {plan.name} reads stream {plan.source!r}, which does not "
                         "exist", code="unknown_stream")  # fmt: skip
    schema = with_received_at(plan.sql, schemas[plan.source])
    hidden = {p.column for p in plan.predictions}
    hidden |= {s.column for s in plan.scoring.scores} if plan.scoring else set()
    hidden |= {c.name for c in plan.over.calls} if plan.over else set()

    def visible(table: pa.Table | None) -> pa.Table | None:
        """Late or error rows as the stream had them: without the columns the model,
        scoring and OVER stages add (``_pm*``, ``_an*``, ``_ov*``)."""
        if table is None or not hidden:
            return table
        return table.select([n for n in table.schema.names if n not in hidden])

    chain = build_chain(plan, schema, refs, models, prefix=prefix, side=visible)
    return Built(chain.nodes, chain.compiled, {plan.source: schema}, schema)


def has_watermark(plan: Plan) -> bool:
    """Whether the plan's last node reports a watermark (windows, joins, or rows of them)."""
    if plan.stream_join is not None or plan.kind != "stateless":
        return True
    return plan.inner is not None and has_watermark(plan.inner)


def conform_side(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Late or error rows in ``schema`` (by column name; missing ones NULL), their own
    late/error columns kept at the end."""
    extra = [f for f in table.schema if f in LATE_COLUMNS or f in ERROR_COLUMNS]
    n = table.num_rows
    columns = [
        table[f.name].cast(f.type, safe=False) if f.name in table.column_names
        else pa.nulls(n, f.type)
        for f in schema
    ]  # fmt: skip
    columns += [table[f.name] for f in extra]
    return pa.Table.from_arrays(columns, schema=pa.schema([*schema, *extra]))
