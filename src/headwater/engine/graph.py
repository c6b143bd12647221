"""The operator graph: a pipeline is a DAG of operators from one closed vocabulary.

Every node runs one ``GraphOperator`` of a kind in ``OperatorKind``; its inputs are the
nodes before it, by port (a join has two), or an input stream for a ``SOURCE`` node.
The graph pushes a micro-batch from a source through the nodes after it: the rows a
node produces (its appends, or its upserts for an aggregate that feeds another
operator) go to the next nodes; its late and error rows go to the pipeline's late and
error tables; the last node (the sink) produces the pipeline's result rows.

Watermarks flow through the graph: a *driven* node (a join, and whatever follows one)
gets ``on_watermark`` with the minimum of its inputs' watermarks whenever that minimum
advances, so a join waits for its slower input. Nodes of a single stream's chain keep
timing themselves on the stream's event time (a dedup before a window sees the same
rows, so both reach the same watermark), which is how they always worked.

>>> OperatorKind("interval_join") is OperatorKind.INTERVAL_JOIN
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import pyarrow as pa

from headwater.engine.operators.base import StepOutput, concat
from headwater.engine.state import pack, unpack

STREAM_PREFIX = "stream:"


class OperatorKind(StrEnum):
    """The closed vocabulary of operators a pipeline compiles to."""

    SOURCE = "source"
    FILTER_PROJECT = "filter_project"
    LOOKUP_JOIN = "lookup_join"
    INTERVAL_JOIN = "interval_join"
    WINDOW_JOIN = "window_join"
    REGULAR_JOIN = "regular_join"
    WINDOW_AGGREGATE = "window_aggregate"
    SESSION = "session"
    DEDUP = "dedup"
    TOP_N = "top_n"
    OVER_AGGREGATE = "over_aggregate"
    PATTERN_MATCH = "pattern_match"
    ANOMALY_SCORE = "anomaly_score"
    MODEL_SCORE = "model_score"
    OUTPUT = "output"


COUNTERS = ("rows_in", "rows_out", "late_rows", "error_rows", "dropped_duplicates")


@dataclass(frozen=True, slots=True)
class OperatorStatus:
    """What an operator reports: its watermark, counters, state size and kind-specific
    details (``open_windows``, ``oldest_open_window_end_ms``...)."""

    kind: OperatorKind
    watermark_ms: int | None = None
    rows_in: int = 0
    rows_out: int = 0
    late_rows: int = 0
    error_rows: int = 0
    dropped_duplicates: int = 0
    state_rows: int = 0
    state_bytes: int = 0
    details: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: OperatorKind, status: Mapping[str, Any]) -> OperatorStatus:
        """From an operator's status mapping (the keys above, the rest are details)."""
        known = {*COUNTERS, "watermark_ms", "state_rows", "state_bytes"}
        return cls(
            kind,
            status.get("watermark_ms"),
            **{k: int(status.get(k, 0)) for k in (*COUNTERS, "state_rows", "state_bytes")},
            details={k: v for k, v in status.items() if k not in known},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"watermark_ms": self.watermark_ms, **self.details}
        out.update({k: getattr(self, k) for k in COUNTERS})
        out.update(state_rows=self.state_rows, state_bytes=self.state_bytes)
        return out


class GraphOperator(Protocol):
    """The one operator contract of the graph."""

    kind: OperatorKind
    driven: bool  # whether the graph hands it its inputs' watermark

    def process(self, port: int, batch: pa.Table, now_ms: int) -> StepOutput: ...

    def on_watermark(self, watermark_ms: int, now_ms: int) -> StepOutput: ...

    def watermark_ms(self) -> int | None: ...

    def on_time(self, now_ms: int) -> StepOutput: ...

    def finish(self, now_ms: int) -> StepOutput: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...

    def status(self) -> OperatorStatus: ...


SideRows = Callable[[pa.Table | None], pa.Table | None]


def _same(table: pa.Table | None) -> pa.Table | None:
    return table


@dataclass(eq=False)
class Node:
    """One operator in the graph.

    ``inputs``: upstream node names by port, or ``stream:<name>`` for a source.
    ``empty``: what a node that appended nothing passes on after a batch (the next
    operators still run, e.g. to close windows). ``late``/``errors``: its side rows
    in the pipeline's late and error schemas.
    """

    name: str
    op: GraphOperator
    inputs: tuple[str, ...] = ()
    empty: pa.Schema | None = None
    late: SideRows = _same
    errors: SideRows = _same


class Graph:
    """Nodes in topological order; the last one is the sink."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = list(nodes)
        self.by_name: dict[str, Node] = {}
        self.consumers: dict[str, list[tuple[Node, int]]] = {n.name: [] for n in self.nodes}
        self.sources: dict[str, list[Node]] = {}  # a self-join reads a stream twice
        for node in self.nodes:
            if node.name in self.by_name:
                raise ValueError(f"two graph nodes are named {node.name!r}")
            for port, upstream in enumerate(node.inputs):
                if upstream.startswith(STREAM_PREFIX):
                    self.sources.setdefault(upstream[len(STREAM_PREFIX) :], []).append(node)
                elif upstream not in self.by_name:
                    raise ValueError(f"node {node.name!r} reads {upstream!r}, not before it")
                else:
                    self.consumers[upstream].append((node, port))
            self.by_name[node.name] = node
        self.sink = self.nodes[-1]
        self._forwarded: dict[str, int] = {}

    @property
    def streams(self) -> tuple[str, ...]:
        return tuple(self.sources)

    def process(self, stream: str, batch: pa.Table, now_ms: int) -> StepOutput:
        """One micro-batch of ``stream`` through the graph."""
        out = StepOutput()
        for node in self.sources[stream]:
            out = out.then(self._push(node, 0, batch, now_ms))
        return out

    def on_time(self, now_ms: int) -> StepOutput:
        """Processing time passed: every node in order; what one releases flows on."""
        return self._each(lambda op: op.on_time(now_ms), now_ms)

    def finish(self, now_ms: int) -> StepOutput:
        """End of a bounded input: every node closes what it holds."""
        return self._each(lambda op: op.finish(now_ms), now_ms)

    def _each(self, call: Callable[[GraphOperator], StepOutput], now_ms: int) -> StepOutput:
        out = StepOutput()
        for node in self.nodes:
            out = out.then(self._after(node, call(node.op), now_ms, always=False))
        return out

    def _push(self, node: Node, port: int, batch: pa.Table, now_ms: int) -> StepOutput:
        return self._after(node, node.op.process(port, batch, now_ms), now_ms, always=True)

    def _after(self, node: Node, step: StepOutput, now_ms: int, always: bool) -> StepOutput:
        """``step`` of ``node``: its side rows, its rows through the nodes after it, and
        the watermark it reached to the driven nodes after it."""
        out = StepOutput(late=node.late(step.late), errors=node.errors(step.errors))
        if node is self.sink:
            return out.then(StepOutput(upserts=step.upserts, appends=step.appends))
        rows = concat([step.upserts, step.appends])
        if rows is None and always and node.empty is not None:
            rows = node.empty.empty_table()
        if rows is not None and (always or rows.num_rows):
            for consumer, port in self.consumers[node.name]:
                out = out.then(self._push(consumer, port, rows, now_ms))
        for consumer, _ in self.consumers[node.name]:
            out = out.then(self._forward(consumer, now_ms))
        return out

    def _forward(self, node: Node, now_ms: int) -> StepOutput:
        """The minimum watermark of ``node``'s inputs, if it advanced and ``node`` is driven."""
        if not node.op.driven:
            return StepOutput()
        marks = [self.by_name[i].op.watermark_ms() for i in node.inputs]
        if any(m is None for m in marks):
            return StepOutput()
        wm = min(m for m in marks if m is not None)
        if wm <= self._forwarded.get(node.name, -(2**63)):
            return StepOutput()
        self._forwarded[node.name] = wm
        return self._after(node, node.op.on_watermark(wm, now_ms), now_ms, always=False)

    # state ------------------------------------------------------------------------
    def snapshot_tables(self) -> dict[str, pa.Table]:
        return {n.name: _blob(n.op.snapshot()) for n in self.nodes}

    def restore_tables(self, tables: Mapping[str, pa.Table]) -> None:
        for node in self.nodes:
            if node.name in tables:
                node.op.restore(tables[node.name]["state"][0].as_py())
        self._forwarded = {}

    def statuses(self) -> Iterator[tuple[Node, OperatorStatus]]:
        for node in self.nodes:
            yield node, node.op.status()

    def status(self) -> dict[str, Any]:
        """The sink's status, with the counters and state of the nodes before it added:
        rows in are the first node's (what the pipeline read)."""
        statuses = list(self.statuses())
        out = statuses[-1][1].to_dict()
        for _, st in reversed(statuses[:-1]):
            out["rows_in"] = st.rows_in
            for key in ("dropped_duplicates", "late_rows", "error_rows", "state_rows"):
                out[key] = out.get(key, 0) + getattr(st, key)
            out["state_bytes"] = out.get("state_bytes", 0) + st.state_bytes
            if out.get("watermark_ms") is None:
                out["watermark_ms"] = st.watermark_ms
        sources = [n for n in self.nodes if n.inputs and n.inputs[0].startswith(STREAM_PREFIX)]
        if len(sources) > 1:  # rows read: each stream's once
            firsts = {n.inputs[0]: n for n in reversed(sources)}
            out["rows_in"] = sum(n.op.status().rows_in for n in firsts.values())
        return out


def _blob(data: bytes) -> pa.Table:
    return pa.table({"state": pa.array([data], pa.large_binary())})


def pack_graph(meta: Mapping[str, Any], graph: Graph) -> bytes:
    return pack({**meta, "nodes": [n.name for n in graph.nodes]}, graph.snapshot_tables())


def unpack_graph(data: bytes) -> tuple[dict[str, Any], dict[str, pa.Table]]:
    return unpack(data)
