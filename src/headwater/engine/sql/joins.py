"""Joins of two streams: ``FROM a [LEFT] JOIN b ON ...`` where both are streams.

- **Interval join**: the ON condition bounds one side's event time by the other's,
  ``a.ts BETWEEN b.ts - INTERVAL '10 seconds' AND b.ts`` (or ``>=``/``<=`` pairs);
  rows are kept while a row of the other side could still match them.
- **Regular join**: no time bound, ``WITH (state_ttl = '1 hour')``: rows are kept for
  that long in event time (``time_columns = 'a.ts, b.ts'``), or in processing time
  (``_received_at``) when no time columns are named.

The SELECT list, WHERE, GROUP BY and HAVING then read the joined rows: ``a.x`` is the
column ``"a.x"`` of the joined rows, and a bare ``x`` the side that has it (``joins``
adds bare names for columns only one side has). The ON condition runs as written.

>>> from headwater.engine.sql.planner import plan_pipeline
>>> plan = plan_pipeline(
...     "CREATE PIPELINE j AS SELECT a.k, b.v FROM s1 a JOIN s2 b "
...     "ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '10 seconds' AND b.ts",
...     streams=["s1", "s2"])
>>> j = plan.stream_join
>>> j.kind, j.left.time_column, j.right.time_column, j.lower_ms, j.upper_ms, plan.inputs
('interval', 'ts', 'ts', -10000, 0, ('s1', 's2'))
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from sqlglot import exp

from headwater.engine.join_spec import JoinHow, JoinSide, StreamJoin
from headwater.engine.plan import Plan
from headwater.engine.sql.sources import _interval, _plain_table
from headwater.engine.sql.text import Statement, node_offset, syntax_error, unsupported
from headwater.model.time import parse_duration_ms

JOINED = "__hw_joined"
WINDOW_END = "window_end"
RECEIVED_AT = "_received_at"  # ``headwater.engine.received`` (which reads this package)
JOIN_OPTIONS = ("state_ttl", "time_columns")
PlanSelect = Callable[[Statement, exp.Select], Plan]


def is_stream_join(select: exp.Select, streams: Collection[str]) -> bool:
    """Whether ``select`` joins two streams, or two subqueries (a window join)."""
    from_ = select.args.get("from_")
    first = from_.this if from_ is not None else None
    own = first.name if isinstance(first, exp.Table) else None
    for join in select.args.get("joins") or []:
        table = join.this
        if isinstance(table, exp.Subquery) or isinstance(first, exp.Subquery):
            return True
        named = isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier)
        if named and (table.name in streams or table.name == own):
            return True
    return False


@dataclass(frozen=True, slots=True)
class _Bound:
    lower: int | None = None
    upper: int | None = None
    left_time: str | None = None
    right_time: str | None = None


def plan_stream_join(
    statement: Statement, select: exp.Select, plan_select: PlanSelect, plan_side: PlanSelect
) -> Plan:
    """The join's spec, and the rest of the query planned over the joined rows."""
    sql = statement.sql
    statement, ttl, times = _join_options(statement)
    joins = select.args.get("joins") or []
    if len(joins) != 1:
        at = node_offset(joins[1]) if len(joins) > 1 else node_offset(select)
        raise unsupported("join of more than two streams", sql, at, "join two streams at a time")
    join = joins[0]
    how = _how(join, sql)
    left = _input(select.args["from_"].this, statement, plan_side)
    right = _input(join.this, statement, plan_side)
    if left.alias == right.alias:
        raise unsupported("one alias for both streams", sql, node_offset(join), "alias them")
    on = join.args.get("on")
    if on is None:
        raise unsupported("join of streams without ON", sql, node_offset(join), "write ON ...")
    bound = _bounds(on, left.alias, right.alias, sql)
    condition = str(on.sql(dialect="duckdb"))
    if left.plan is not None or right.plan is not None:
        spec = _window_join(how, left, right, condition, bound, sql, node_offset(on))
    elif bound.lower is not None and bound.upper is not None:
        spec = StreamJoin("interval", how, replace(left, time_column=str(bound.left_time)),
                          replace(right, time_column=str(bound.right_time)), condition,
                          lower_ms=bound.lower, upper_ms=bound.upper)  # fmt: skip
    elif ttl is not None:
        lt, rt = _time_columns(times, left.alias, right.alias, sql)
        spec = StreamJoin("regular", how, replace(left, time_column=lt),
                          replace(right, time_column=rt), condition, ttl_ms=ttl)  # fmt: skip
    else:
        raise unsupported(
            "join of two streams without a time bound",
            sql,
            node_offset(on),
            f"bound the time, e.g. {left.alias}.ts BETWEEN {right.alias}.ts - INTERVAL "
            f"'10 seconds' AND {right.alias}.ts, or keep rows for a while with "
            "WITH (state_ttl = '1 hour')",
        )
    rest = _over_joined(select, (left.alias, right.alias), sql)
    plan = plan_select(statement, rest)
    return replace(plan, source=left.stream, source_alias=JOINED, stream_join=spec)


def _input(node: exp.Expr, statement: Statement, plan_side: PlanSelect) -> JoinSide:
    """One side: a stream (time column found later), or a windowed aggregate subquery."""
    sql = statement.sql
    if isinstance(node, exp.Subquery) and isinstance(node.this, exp.Select):
        if not node.alias:
            raise unsupported("subquery without an alias", sql, node_offset(node), "alias it")
        plan = plan_side(statement, node.this)
        if plan.window is None or not plan.grouped or plan.options.emit != "final":
            raise unsupported(
                "join of a subquery that is not a windowed aggregate", sql, node_offset(node),
                "join streams, or two windowed aggregates (GROUP BY window_start, window_end, "
                "emit = 'final') on window_end",
            )  # fmt: skip
        return JoinSide(plan.source, node.alias, WINDOW_END, plan)
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        raise unsupported("this join input", sql, node_offset(node), "join two named streams")
    _plain_table(node, sql)
    return JoinSide(node.name, node.alias or node.name, "")


def _window_join(
    how: JoinHow, left: JoinSide, right: JoinSide, condition: str, bound: _Bound, sql: str,
    at: int | None,
) -> StreamJoin:  # fmt: skip
    """Two windowed aggregates joined on their windows: each window's rows meet once both
    sides closed it (an interval join on ``window_end`` with no slack)."""
    windows = {s.plan.window for s in (left, right) if s.plan is not None}
    same = len(windows) == 1 and left.plan is not None and right.plan is not None
    on_end = (bound.lower, bound.upper, bound.left_time, bound.right_time) == (
        0, 0, WINDOW_END, WINDOW_END)  # fmt: skip
    if not same or not on_end:
        raise unsupported(
            "window join" if same else "join of a windowed aggregate with a stream", sql, at,
            f"join two aggregates of the same windows ON ... AND {left.alias}.window_end = "
            f"{right.alias}.window_end",
        )  # fmt: skip
    return StreamJoin("window", how, left, right, condition)


def _join_options(statement: Statement) -> tuple[Statement, int | None, str | None]:
    ttl: int | None = None
    times: str | None = None
    rest = []
    for key, value, offset in statement.options:
        if key == "state_ttl":
            try:
                ttl = parse_duration_ms(value)
            except ValueError as exc:
                raise syntax_error(statement.sql, offset, f"state_ttl: {exc}") from exc
            if ttl <= 0:
                raise syntax_error(statement.sql, offset, "state_ttl must be positive")
        elif key == "time_columns":
            times = value
        else:
            rest.append((key, value, offset))
    return replace(statement, options=rest), ttl, times


def _how(join: exp.Join, sql: str) -> JoinHow:
    method, side, kind = (str(join.args.get(k) or "").upper() for k in ("method", "side", "kind"))
    if method or side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER"):
        shown = " ".join(w for w in (method, side, kind) if w) + " JOIN"
        raise unsupported(
            f"{shown} of two streams", sql, node_offset(join), "use JOIN or LEFT JOIN"
        )
    return "left" if side == "LEFT" else "inner"


def _time_columns(times: str | None, left: str, right: str, sql: str) -> tuple[str, str]:
    if times is None:
        return RECEIVED_AT, RECEIVED_AT
    found: dict[str, str] = {}
    for item in times.split(","):
        alias, _, column = item.strip().partition(".")
        if alias not in (left, right) or not column:
            raise syntax_error(sql, None, f"time_columns: write '{left}.ts, {right}.ts'")
        found[alias] = column.strip().strip('"')
    if set(found) != {left, right}:
        raise syntax_error(sql, None, f"time_columns names one column of {left} and of {right}")
    return found[left], found[right]


def _bounds(on: exp.Expr, left: str, right: str, sql: str) -> _Bound:
    """Bounds on ``left.t - right.t`` found in the ON condition's conjuncts.

    Several column pairs may be bounded (``a.v BETWEEN b.v - 1 AND b.v + 1`` too): the
    time bound is a pair bounded on both sides, preferably one written with INTERVALs.
    """
    pairs: dict[tuple[str, str], _Bound] = {}
    timed: set[tuple[str, str]] = set()
    for part in on.flatten() if isinstance(on, exp.And) else [on]:
        for a, b, op in _comparisons(part):
            found = _compare(a, b, op, left, right, sql)
            if found is None:
                continue
            pair, op, offset, interval = found
            bound = pairs.get(pair, _Bound(left_time=pair[0], right_time=pair[1]))
            if op == ">=":
                lower = offset if bound.lower is None else max(bound.lower, offset)
                bound = replace(bound, lower=lower)
            else:
                upper = offset if bound.upper is None else min(bound.upper, offset)
                bound = replace(bound, upper=upper)
            pairs[pair] = bound
            if interval or pair == (WINDOW_END, WINDOW_END):
                timed.add(pair)
    whole = [k for k, b in pairs.items() if b.lower is not None and b.upper is not None]
    best = next((k for k in whole if k in timed), whole[0] if whole else None)
    return pairs[best] if best is not None else _Bound()


def _comparisons(part: exp.Expr) -> list[tuple[exp.Expr, exp.Expr, str]]:
    """``part`` as (a, b, '>=' or '<=') comparisons, when it is a range condition."""
    if isinstance(part, exp.Between):
        return [(part.this, part.args["low"], ">="), (part.this, part.args["high"], "<=")]
    if isinstance(part, exp.EQ) and _names(part) == {WINDOW_END}:
        return [(part.this, part.expression, ">="), (part.this, part.expression, "<=")]
    if isinstance(part, exp.GTE | exp.GT):
        return [(part.this, part.expression, ">=")]
    if isinstance(part, exp.LTE | exp.LT):
        return [(part.this, part.expression, "<=")]
    return []


def _names(part: exp.Expr) -> set[str]:
    return {str(c.name).lower() for c in (part.this, part.expression) if isinstance(c, exp.Column)}


def _compare(
    a: exp.Expr, b: exp.Expr, op: str, left: str, right: str, sql: str
) -> tuple[tuple[str, str], str, int, bool] | None:
    """``a op b`` where each is ``alias.col [+|- INTERVAL]``, as ``left.t op right.t +
    offset``: ((left column, right column), op, offset, whether an INTERVAL was written)."""
    x, y = _time_term(a, sql), _time_term(b, sql)
    if x is None or y is None or {x[0], y[0]} != {left, right}:
        return None
    if x[0] == right:  # right.t + p op left.t + q  ==  left.t op' right.t + (p - q)
        x, y, op = y, x, "<=" if op == ">=" else ">="
    interval = a.find(exp.Interval) is not None or b.find(exp.Interval) is not None
    return (x[1], y[1]), op, y[2] - x[2], interval


def _time_term(node: exp.Expr, sql: str) -> tuple[str, str, int] | None:
    """``alias.col`` (+|- INTERVAL) as (alias, column, offset ms), else None."""
    sign = 0
    if isinstance(node, exp.Add | exp.Sub) and isinstance(node.expression, exp.Interval):
        sign = 1 if isinstance(node, exp.Add) else -1
        offset = sign * _interval(node.expression, sql)
        node = node.this
    else:
        offset = 0
    if isinstance(node, exp.Column) and node.table:
        return str(node.table), str(node.name), offset
    return None


def _over_joined(select: exp.Select, aliases: tuple[str, str], sql: str) -> exp.Select:
    """The query with FROM the joined rows, ``a.x`` read as the joined column ``"a.x"``."""
    rest = select.copy()
    rest.set("joins", None)
    rest.set("from_", exp.From(this=exp.Table(this=exp.to_identifier(JOINED))))
    items = []
    for item in rest.expressions:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and item.is_star):
            raise unsupported("* over a join of streams", sql, node_offset(item), "list columns")
        if isinstance(item, exp.Column) and item.table in aliases:
            item = exp.alias_(item, str(item.name), quoted=True)
        items.append(item)
    rest.set("expressions", items)

    def flat(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and node.table in aliases:
            return exp.column(f"{node.table}.{node.name}", quoted=True)
        return node

    return rest.transform(flat)  # type: ignore[return-value]
