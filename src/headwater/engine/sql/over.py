"""OVER aggregates in pipeline SQL: ``avg(x) OVER (PARTITION BY k ORDER BY ts ROWS 10
PRECEDING)`` and ``RANGE INTERVAL '1 minute' PRECEDING``, on event time.

As with the anomaly functions (``scoring``), the calls are taken out of the SELECT list
before the rest is planned: each becomes a column ``_ov{i}``, computed by the OVER stage
(``headwater.engine.operators.over``), and what remains is a stateless pipeline. Every
call shares one PARTITION BY and ORDER BY <event-time column>; frames are bounded.

>>> import sqlglot
>>> select = sqlglot.parse_one("SELECT k, avg(v) OVER (PARTITION BY k ORDER BY ts "
...     "ROWS 10 PRECEDING) AS a FROM s", dialect="duckdb")
>>> rest, over = extract_over(select, "")
>>> rest.sql("duckdb"), over.rows, over.range_ms
('SELECT k, "_ov0" AS a FROM s', 10, 0)
"""

from __future__ import annotations

from dataclasses import replace

from sqlglot import exp

from headwater.engine.plan import Column, OverAggregates, Plan
from headwater.engine.sql.sources import _interval
from headwater.engine.sql.text import node_offset, unsupported

AGGREGATES = (exp.Avg, exp.Sum, exp.Min, exp.Max, exp.Count, exp.Stddev, exp.StddevSamp,
              exp.StddevPop, exp.Variance, exp.VariancePop)  # fmt: skip
SEQ = "_hw_seq"  # arrival order: ties in event time keep it, so ROWS frames are exact
FORM = "avg(x) OVER (PARTITION BY key ORDER BY ts ROWS 10 PRECEDING)"


def is_over_aggregate(node: exp.Expr) -> bool:
    return isinstance(node, exp.Window) and isinstance(node.this, AGGREGATES)


def extract_over(select: exp.Select, sql: str) -> tuple[exp.Select, OverAggregates | None]:
    """The SELECT without its OVER aggregates, and the aggregates it asks for."""
    calls = [w for i in select.expressions for w in i.find_all(exp.Window) if is_over_aggregate(w)]
    if not calls:
        return select, None
    if select.args.get("group") is not None:
        raise unsupported(
            "OVER aggregates with GROUP BY", sql, node_offset(select.args["group"]),
            "compute them in one pipeline, aggregate its results in another",
        )  # fmt: skip
    partition, order = _frame_keys(calls[0], sql)
    rows, range_ms, columns, names = 0, 0, [], set()
    for i, call in enumerate(calls):
        if _frame_keys(call, sql) != (partition, order):
            raise unsupported(
                "OVER aggregates with different PARTITION BY or ORDER BY", sql,
                node_offset(call), "give every OVER aggregate the same key and time column",
            )  # fmt: skip
        kind, size = _frame(call, sql)
        rows, range_ms = (
            (max(rows, size), range_ms) if kind == "ROWS" else (rows, max(range_ms, size))
        )
        text = call.copy()
        if kind == "ROWS":
            text.args["order"].append("expressions", exp.Ordered(this=exp.column(SEQ)))
        columns.append(Column(f"_ov{i}", text.sql(dialect="duckdb")))
        ref = exp.column(f"_ov{i}", quoted=True)
        if isinstance(call.parent, exp.Select):
            name = type(call.this).__name__.lower()
            name = name if name not in names else f"{name}_{i}"
            names.add(name)
            call.replace(exp.alias_(ref, name))
        else:
            call.replace(ref)
    return select, OverAggregates(partition, order, tuple(columns), rows, range_ms)


def _frame_keys(call: exp.Window, sql: str) -> tuple[tuple[str, ...], str]:
    order = call.args.get("order")
    keys = order.expressions if order is not None else []
    if len(keys) != 1 or not isinstance(keys[0].this, exp.Column) or keys[0].args.get("desc"):
        raise unsupported("an OVER aggregate without ORDER BY <event time column>", sql,
                          node_offset(call), FORM)  # fmt: skip
    partition = tuple(p.sql(dialect="duckdb") for p in call.args.get("partition_by") or [])
    return partition, str(keys[0].this.name)


def _frame(call: exp.Window, sql: str) -> tuple[str, int]:
    """('ROWS', n) or ('RANGE', ms) of ``n``/``INTERVAL`` PRECEDING AND CURRENT ROW."""
    spec = call.args.get("spec")
    at = node_offset(call)
    if spec is None:
        raise unsupported("an OVER aggregate without a frame", sql, at,
                          "bound its history: ROWS n PRECEDING or RANGE INTERVAL '1 minute' PRECEDING")  # fmt: skip
    start, end = spec.args.get("start"), spec.args.get("end")
    if spec.args.get("start_side") != "PRECEDING" or end not in (None, "CURRENT ROW") or start in (
        None, "UNBOUNDED", "CURRENT ROW"
    ):  # fmt: skip
        raise unsupported("this window frame", sql, at,
                          "ROWS n PRECEDING or RANGE INTERVAL '...' PRECEDING (up to the current row)")  # fmt: skip
    if spec.args.get("kind") == "ROWS":
        if not (isinstance(start, exp.Literal) and start.is_int and int(start.this) >= 0):
            raise unsupported("ROWS with this bound", sql, at, "write a count: ROWS 10 PRECEDING")
        return "ROWS", int(start.this)
    return "RANGE", _interval(start, sql)


def over_plan(plan: Plan, over: OverAggregates, sql: str) -> Plan:
    """A stateless plan made to compute its OVER aggregates first (WHERE moves before)."""
    if plan.kind != "stateless" or plan.joins or plan.scoring is not None or plan.dedup:
        at = sql.upper().find(" OVER")
        raise unsupported(
            "OVER aggregates with windows, joins, DEDUP or anomaly functions", sql,
            at + 1 if at >= 0 else None,
            "compute OVER aggregates over the stream in a pipeline of their own",
        )  # fmt: skip
    hidden = ", ".join(f'"{c.name}"' for c in over.calls)
    projection = tuple(
        Column(c.name, f"{c.expr} EXCLUDE ({hidden})") if c.name == "*" else c
        for c in plan.projection
    )
    return replace(plan, over=replace(over, filter=plan.filter), filter=None, projection=projection)
