"""The graph of a single stream's pipeline: its source, then its operators in a chain.

``source → [DEDUP] → [MODEL_SCORE] → [ANOMALY_SCORE] → [OVER_AGGREGATE] → main``, where
main is the filter/projection (a ``LOOKUP_JOIN`` with reference tables), the window or
session aggregate, the pattern match or the Top-N. Node names are stable (state is
saved under them); ``LEGACY`` maps the state of version 1 snapshots, saved as
``op0, op1...`` over the operators after the source, onto them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from headwater.engine.compile import Compiled, compile_plan, ref_name
from headwater.engine.graph import STREAM_PREFIX, Node, OperatorKind
from headwater.engine.models import InMemoryModels, Models
from headwater.engine.operators.anomaly import AnomalyScore
from headwater.engine.operators.base import Operator
from headwater.engine.operators.chained import Chained
from headwater.engine.operators.dedup import Dedup
from headwater.engine.operators.over import OverAggregate
from headwater.engine.operators.pattern import PatternMatch
from headwater.engine.operators.predict import ModelScore
from headwater.engine.operators.query import BatchQuery
from headwater.engine.operators.session import SessionAggregate
from headwater.engine.operators.source import Source
from headwater.engine.operators.stateless import Stateless
from headwater.engine.operators.topn_changes import top_n_stage
from headwater.engine.operators.topn_rows import RankedWindowRows
from headwater.engine.operators.window import WindowAggregate
from headwater.engine.plan import Plan
from headwater.engine.references import ReferenceTables

SideRows = Callable[[pa.Table | None], pa.Table | None]


@dataclass(frozen=True, slots=True)
class Chain:
    nodes: list[Node]
    compiled: Compiled


def main_kind(plan: Plan) -> OperatorKind:
    if plan.top_n is not None:
        return OperatorKind.TOP_N
    if plan.kind == "stateless":
        return OperatorKind.LOOKUP_JOIN if plan.joins else OperatorKind.FILTER_PROJECT
    if plan.kind == "pattern":
        return OperatorKind.PATTERN_MATCH
    return OperatorKind.SESSION if plan.kind == "session" else OperatorKind.WINDOW_AGGREGATE


def build_chain(
    plan: Plan,
    input_schema: pa.Schema,
    refs: ReferenceTables,
    models: Models | None = None,
    *,
    upstream: str | None = None,  # a node before the chain (a join), instead of the stream
    prefix: str = "",
    side: SideRows | None = None,
    driven: bool | None = None,  # default: when it reads ``upstream``
) -> Chain:
    """The chain's nodes (a source first unless ``upstream``) and the compiled plan."""
    schemas = {name: refs.get(name).schema for name in plan.references}

    def tables() -> dict[str, pa.Table]:
        return {ref_name(i): refs.get(j.table) for i, j in enumerate(plan.joins)}

    driven = upstream is not None if driven is None else driven
    stages: list[tuple[str, OperatorKind, Operator]] = []
    if plan.dedup is not None:
        stages.append(("dedup", OperatorKind.DEDUP, Dedup(plan.dedup, plan.options, input_schema)))
    scored = input_schema
    label = f"pipeline {plan.name}"
    if plan.predictions:
        stage = ModelScore(plan.predictions, models or InMemoryModels(), input_schema, label)
        stages.append(("predict", OperatorKind.MODEL_SCORE, stage))
        scored = stage.output_schema
    compiled = compile_plan(plan, scored, schemas, tables)
    if plan.scoring is not None:
        stages.append(
            ("anomaly", OperatorKind.ANOMALY_SCORE, AnomalyScore(plan.scoring, scored, label))
        )
    if plan.over is not None:
        over = OverAggregate(plan.over, plan.options, input_schema, label)
        stages.append(("over", OperatorKind.OVER_AGGREGATE, over))
    main: Operator
    if plan.top_n is not None and not plan.grouped:
        main = RankedWindowRows(compiled)
    elif plan.kind == "stateless":
        main = Stateless(compiled)
    elif plan.kind == "pattern":
        main = PatternMatch(compiled)
    elif plan.kind == "session":
        main = SessionAggregate(compiled)
    else:
        main = WindowAggregate(compiled)
    if compiled.top_n is not None and plan.grouped:
        assert isinstance(compiled.top_n, BatchQuery)
        main = top_n_stage(main, compiled, input_schema)
    stages.append(("main", main_kind(plan), main))
    nodes: list[Node] = []
    before = upstream
    if upstream is None:
        source = Node(f"{prefix}source", Source(plan.source), (STREAM_PREFIX + plan.source,))
        nodes.append(source)
        before = source.name
    for name, kind, op in stages:
        # what flows on when a stage appends nothing: the legacy chain passed the stream's
        # empty rows between its stages; the last stage's rows are the result's
        empty = compiled.output_schema if name == "main" else input_schema
        node = Node(prefix + name, Chained(kind, op, driven), (str(before),), empty)
        if side is not None:
            node.late = node.errors = side
        nodes.append(node)
        before = node.name
    return Chain(nodes, compiled)


LEGACY_PREFIX = "op"


def legacy_names(nodes: list[Node]) -> dict[str, str]:
    """Version 1 state names (``op{i}``, the operators after the source) → node names."""
    ops = [n for n in nodes if n.op.kind is not OperatorKind.SOURCE]
    return {f"{LEGACY_PREFIX}{i}": n.name for i, n in enumerate(ops)}
