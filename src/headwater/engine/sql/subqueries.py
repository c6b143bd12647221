"""Pipelines over pipelines: a subquery in ``FROM``, or ``FROM <another pipeline>``.

The inner query is planned as a pipeline of its own (``Plan.inner``) and the outer one
over its result rows; both compile into one operator graph, so the inner result never
leaves the pipeline, its watermark flows on to the outer operators, and state,
offsets and results still commit at once. ``FROM other_pipeline`` reads that
pipeline's query (with its own ``WITH`` options) as such a subquery: it is computed
again from the stream, like a view, so the two pipelines stay independent.

Windows over another query's rows are written ``FROM TUMBLE(<subquery or pipeline>,
time_column, INTERVAL ...)`` (``HOP``, ``SESSION`` too), e.g. to count a join's pairs per
minute. Aggregating windowed results again (``max`` of per-window counts) is written as
in a batch query: ``GROUP BY window_start, window_end`` over a subquery that aggregates
``TUMBLE`` windows closes each outer window when the inner one closes.

>>> from headwater.engine.sql.planner import plan_pipeline
>>> plan = plan_pipeline(
...     "CREATE PIPELINE busiest AS SELECT window_start, max(n) AS top FROM ("
...     "SELECT device_id, window_start, window_end, count(*) AS n "
...     "FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
...     "GROUP BY device_id, window_start, window_end) w GROUP BY window_start, window_end")
>>> plan.inner.window.size_ms, plan.window.time_column, plan.window.size_ms, plan.inputs
(60000, 'window_start', 60000, ('readings',))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlglot import exp

from headwater.engine.plan import Plan
from headwater.engine.sql.text import SESSION_ALIAS, Statement, node_offset, unsupported

SUB = "__hw_sub"
WINDOW_COLUMNS = ("window_start", "window_end")
WINDOWS = ("TUMBLE", "HOP", SESSION_ALIAS)
PlanSelect = Callable[[Statement, exp.Select], Plan]


def reads_subquery(select: exp.Select) -> bool:
    from_ = select.args.get("from_")
    return from_ is not None and isinstance(from_.this, exp.Subquery)


def reads_pipeline(select: exp.Select, pipelines: set[str]) -> str | None:
    """The pipeline named in FROM, if FROM names one."""
    from_ = select.args.get("from_")
    table = from_.this if from_ is not None else None
    if isinstance(table, exp.Table) and isinstance(table.this, exp.Identifier):
        return table.name if table.name in pipelines else None
    return None


def windowed_input(
    select: exp.Select, pipelines: set[str]
) -> tuple[exp.Anonymous, exp.Select | str] | None:
    """``FROM TUMBLE(<subquery or pipeline>, ...)``: the window and what it reads."""
    from_ = select.args.get("from_")
    table = from_.this if from_ is not None else None
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Anonymous):
        return None
    func = table.this
    if str(func.name).upper() not in WINDOWS or not func.expressions:
        return None
    first = func.expressions[0]
    if isinstance(first, exp.Subquery) and isinstance(first.this, exp.Select):
        return func, first.this
    if isinstance(first, exp.Column) and not first.table and first.name in pipelines:
        return func, str(first.name)
    return None


def plan_windowed(
    statement: Statement, select: exp.Select, inner: Plan, plan_outer: PlanSelect
) -> Plan:
    """Windows over the rows of ``inner``: ``FROM TUMBLE(<inner>, time, INTERVAL ...)``."""
    _final(statement, select, inner)
    table = select.args["from_"].this
    func = table.this
    window = exp.Anonymous(this=func.name, expressions=[exp.column(SUB),
                           *(e.copy() for e in func.expressions[1:])])  # fmt: skip
    outer = select.copy()
    outer.set("from_", exp.From(this=exp.Table(this=window, alias=exp.TableAlias(
        this=exp.to_identifier(table.alias or SUB)))))  # fmt: skip
    plan = plan_outer(statement, outer)
    if not plan.grouped:
        raise unsupported(
            f"{str(func.name).upper()} without aggregates", statement.sql, node_offset(select),
            "aggregate the windows: GROUP BY ..., window_start, window_end",
        )  # fmt: skip
    return replace(plan, source=inner.source, inner=inner)


def _final(statement: Statement, select: exp.Select, inner: Plan) -> None:
    if inner.grouped and inner.options.emit == "changes":
        raise unsupported(
            "a pipeline over emit = 'changes' results", statement.sql, node_offset(select),
            "aggregate the windows with emit = 'final': each window's rows then come once",
        )  # fmt: skip


def plan_over(
    statement: Statement, select: exp.Select, inner: Plan, alias: str, plan_outer: PlanSelect
) -> Plan:
    """The outer query of ``select`` over the rows of ``inner`` (known as ``alias``)."""
    sql = statement.sql
    _final(statement, select, inner)
    outer = select.copy()
    source: exp.Expr = exp.Table(this=exp.to_identifier(SUB), alias=exp.TableAlias(
        this=exp.to_identifier(alias)))  # fmt: skip
    if _regroups_windows(outer, alias) and inner.window is not None:
        if inner.window.kind != "tumble":
            raise unsupported(
                f"GROUP BY window_start, window_end over {inner.window.kind.upper()} windows",
                sql, node_offset(outer.args.get("group")),
                "aggregate TUMBLE windows again; hopping and session windows overlap or vary",
            )  # fmt: skip
        size = exp.Interval(this=exp.Literal.string(str(inner.window.size_ms)),
                            unit=exp.var("MILLISECONDS"))  # fmt: skip
        window = exp.Anonymous(this="TUMBLE", expressions=[exp.column(SUB),
                               exp.column("window_start"), size])  # fmt: skip
        source = exp.Table(this=window, alias=exp.TableAlias(this=exp.to_identifier(alias)))
    outer.set("from_", exp.From(this=source))
    plan = plan_outer(statement, outer)
    return replace(plan, source=inner.source, inner=inner)


def subquery_of(select: exp.Select, sql: str) -> tuple[exp.Select, str]:
    sub = select.args["from_"].this
    assert isinstance(sub, exp.Subquery)
    if not isinstance(sub.this, exp.Select):
        raise unsupported("this subquery in FROM", sql, node_offset(sub), "write one SELECT")
    return sub.this, sub.alias or SUB


def _regroups_windows(select: exp.Select, alias: str) -> bool:
    """Whether the query groups by the inner result's window_start and window_end."""
    group = select.args.get("group")
    if group is None:
        return False
    names = {
        str(c.name).lower()
        for c in group.expressions
        if isinstance(c, exp.Column) and c.table in ("", alias)
    }
    return all(w in names for w in WINDOW_COLUMNS)
