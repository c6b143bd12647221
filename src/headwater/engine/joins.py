"""The graph of a pipeline that joins two streams.

``source(left) ─┐
                ├─▶ join ─▶ chain over the joined rows (filter/projection/aggregation)
source(right) ──┘``

The sources time themselves on the join's time columns; the join and the chain after
it are driven by the graph's watermark (the minimum over the two sources). The joined
rows name each side's columns ``alias.column``, plus the bare ``column`` when only one
side has it. Late and error rows of either side (and of the chain) go to one late and
one error table: the union of both streams' columns (a column both have with different
types becomes a string), plus ``_stream``, the stream the row came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import pyarrow as pa

from headwater.engine.chain import build_chain
from headwater.engine.graph import STREAM_PREFIX, Node
from headwater.engine.join_spec import StreamJoin
from headwater.engine.models import Models
from headwater.engine.operators.base import ERROR_COLUMNS, LATE_COLUMNS
from headwater.engine.operators.join_streams import JoinInput, StreamJoinOperator
from headwater.engine.operators.query import conform, normalize_schema
from headwater.engine.operators.source import Source
from headwater.engine.plan import Plan
from headwater.engine.received import RECEIVED_AT, RECEIVED_TYPE, with_received_at
from headwater.engine.references import ReferenceTables
from headwater.engine.subgraph import Built, build_nodes
from headwater.errors import BadRequest, QueryError

STREAM_COLUMN = "_stream"


def build_join_graph(
    plan: Plan,
    schemas: Mapping[str, pa.Schema],
    refs: ReferenceTables,
    models: Models | None = None,
    prefix: str = "",
) -> Built:
    spec = plan.stream_join
    assert spec is not None
    label = f"pipeline {plan.name}"
    nodes: list[Node] = []
    inputs, ports, lates, streams = [], [], [], {}
    inner: list[tuple[str, list[Node]]] = []  # the nodes of each windowed aggregate
    for side, name in ((spec.left, "left"), (spec.right, "right")):
        if side.plan is not None:  # a windowed aggregate: its nodes, then the join
            built = build_nodes(side.plan, schemas, refs, models, f"{prefix}{side.alias}.")
            nodes += built.nodes
            inner.append((side.stream, built.nodes))
            ports.append(built.sink)
            inputs.append(JoinInput(side, built.compiled.output_schema))
            lates.append(built.late_schema)
            streams.update(built.input_schemas)
            continue
        if side.stream not in schemas:
            raise BadRequest(f"{label} reads stream {side.stream!r}, which does not exist",
                             code="unknown_stream")  # fmt: skip
        schema = normalize_schema(with_received_at(plan.sql, schemas[side.stream]))
        if side.time_column == RECEIVED_AT and RECEIVED_AT not in schema.names:
            schema = schema.append(pa.field(RECEIVED_AT, RECEIVED_TYPE))
        _check_time(schema, side.stream, side.time_column, label)
        source = Source(side.stream, side.time_column, plan.options)
        nodes.append(Node(prefix + name, source, (STREAM_PREFIX + side.stream,)))
        ports.append(prefix + name)
        inputs.append(JoinInput(side, schema))
        lates.append(schema)
        streams[side.stream] = schema
    left, right = inputs
    rows = union_schema(*lates)
    sides = (spec.left, spec.right)
    for stream, side_nodes in inner:  # their late rows in the join's late table
        for node in side_nodes:
            node.late = _to_union(node.late, rows, stream)
            node.errors = _to_union(node.errors, rows, stream)

    def side_rows(table: pa.Table, port: int) -> pa.Table:
        return to_union(table, rows, sides[port].stream, {})

    try:
        join = StreamJoinOperator(spec, (left, right), plan.options.allowed_lateness_ms,
                                  side_rows, label)  # fmt: skip
    except QueryError:
        raise
    except Exception as exc:  # DuckDB's binder errors name the problem
        raise QueryError(f"{label}: {exc}") from exc
    joined = join.output_schema
    names = bare_sources(spec, left, right)

    def chain_rows(table: pa.Table | None) -> pa.Table | None:
        return None if table is None else to_union(table, rows, "", names)

    nodes.append(Node(prefix + "join", join, tuple(ports), joined))
    rest = replace(plan, stream_join=None, dedup=None)
    chain = build_chain(rest, joined, refs, models, upstream=prefix + "join", prefix=prefix,
                        side=chain_rows)  # fmt: skip
    return Built(nodes + chain.nodes, chain.compiled, streams, rows)


def _to_union(
    side: Callable[[pa.Table | None], pa.Table | None], rows: pa.Schema, stream: str
) -> Callable[[pa.Table | None], pa.Table | None]:
    def to(table: pa.Table | None) -> pa.Table | None:
        table = side(table)
        return None if table is None else to_union(table, rows, stream, {})

    return to


def _check_time(schema: pa.Schema, stream: str, column: str, label: str) -> None:
    if column not in schema.names:
        raise QueryError(f"{label}: stream {stream} has no column {column!r}")
    t = schema.field(column).type
    if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
        raise QueryError(f"{label}: time column {column!r} of {stream} is {t}; use a timestamp")


def bare_sources(spec: StreamJoin, left: JoinInput, right: JoinInput) -> dict[str, str]:
    """Union column → joined column to read it from (the left side's when both have it)."""
    out = {f.name: spec.column(spec.right.alias, f.name) for f in right.schema}
    out.update({f.name: spec.column(spec.left.alias, f.name) for f in left.schema})
    return out


def union_schema(left: pa.Schema, right: pa.Schema) -> pa.Schema:
    fields = {f.name: f for f in left}
    for f in right:
        if f.name in fields and not fields[f.name].type.equals(f.type):
            fields[f.name] = pa.field(f.name, pa.string())
        fields.setdefault(f.name, f)
    return pa.schema([pa.field(STREAM_COLUMN, pa.string()), *fields.values()])


def to_union(table: pa.Table, schema: pa.Schema, stream: str, names: Mapping[str, str]) -> pa.Table:
    """Side rows (late or error) in the union schema, their extra columns kept at the end."""
    n = table.num_rows
    extra = [f for f in table.schema if f in LATE_COLUMNS or f in ERROR_COLUMNS]
    columns = []
    for f in schema:
        if f.name == STREAM_COLUMN:
            columns.append(pa.array([stream or None] * n, pa.string()))
            continue
        source = f.name if f.name in table.column_names else names.get(f.name)
        if source is None or source not in table.column_names:
            columns.append(pa.nulls(n, f.type))
        else:
            columns.append(table[source].cast(f.type, safe=False))
    columns += [table[f.name] for f in extra]
    out = pa.Table.from_arrays(columns, schema=pa.schema([*schema, *extra]))
    return conform(out, out.schema)
