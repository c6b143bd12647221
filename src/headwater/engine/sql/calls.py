"""Recognising aggregate calls in a pipeline's SELECT.

Streaming aggregates are computed by the engine, not by DuckDB, so each one must be
mergeable across micro-batches. Supported (DuckDB names, aliases in brackets):

- ``count(*)``, ``count(x)``, ``count(DISTINCT x)`` (exact), ``count_if(cond)`` (as in
  DuckDB: the sum of the condition, NULL when every condition is NULL)
- ``sum``, ``avg`` [``mean``], ``min``, ``max``
- ``var_samp`` [``variance``], ``var_pop``, ``stddev_samp`` [``stddev``], ``stddev_pop``
- ``approx_count_distinct(x)``: HyperLogLog, 4096 registers, standard error 1.6%
- ``approx_quantile(x, q)``, ``quantile_cont(x, q)`` [``median(x)``]: exact up to 512
  values per group, a KLL sketch beyond (see ``headwater.engine.aggregates.quantiles``)
- ``arg_min(x, by)`` [``min_by``], ``arg_max(x, by)`` [``max_by``]: ``x`` at the
  smallest/largest ``by`` (e.g. the first/last value by event time); rows where ``x``
  or ``by`` is NULL are skipped; ties go to the row that arrived first.

Any aggregate may carry ``FILTER (WHERE cond)``. Everything else DuckDB knows as an
aggregate (``first``, ``mode``, ``list``, ``string_agg``, ...) is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sqlglot import exp

from headwater.engine.connection import connect_duckdb
from headwater.engine.plan import AggFunc
from headwater.engine.sql.text import node_offset, unsupported

SIMPLE: dict[type[exp.Expr], AggFunc] = {
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.Stddev: "stddev_samp",
    exp.StddevSamp: "stddev_samp",
    exp.StddevPop: "stddev_pop",
    exp.Variance: "var_samp",
    exp.VariancePop: "var_pop",
    exp.ApproxDistinct: "approx_count_distinct",
    exp.Median: "quantile_cont",
}
ANONYMOUS: dict[str, AggFunc] = {"mean": "avg", "var_samp": "var_samp"}
HINTS = {
    "first": "use arg_min(x, ts) for the first value by event time",
    "last": "use arg_max(x, ts) for the last value by event time",
    "any_value": "use arg_min(x, ts) or arg_max(x, ts)",
    "quantile_disc": "use approx_quantile(x, q) or quantile_cont(x, q)",
    "quantile": "use approx_quantile(x, q) or quantile_cont(x, q)",
}


@dataclass(frozen=True, slots=True)
class Call:
    """An aggregate call: its function, argument expressions and quantile."""

    func: AggFunc
    args: tuple[exp.Expr, ...]
    param: float | None = None


@cache
def duckdb_aggregates() -> frozenset[str]:
    """Every aggregate function name DuckDB knows (so none slips through as a scalar)."""
    with connect_duckdb(lock=False) as con:
        rows = con.sql(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() "
            "WHERE function_type = 'aggregate'"
        ).fetchall()
    return frozenset(str(r[0]) for r in rows)


def function_name(node: exp.Expr) -> str:
    """The name of a function call as written (for messages and aliases)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return node.sql(dialect="duckdb").split("(", 1)[0].strip().lower()


def is_aggregate(node: exp.Expr) -> bool:
    if isinstance(node, exp.Filter):
        return is_aggregate(node.this)
    if isinstance(node, exp.AggFunc):
        return True
    if isinstance(node, exp.Anonymous):
        return function_name(node) in duckdb_aggregates()
    if isinstance(node, exp.Func) and not isinstance(node, exp.Binary | exp.Connector):
        return any(n.lower() in duckdb_aggregates() for n in type(node).sql_names())
    return False


def read_call(node: exp.Expr, sql: str) -> Call:
    """Read one aggregate node (possibly ``agg FILTER (WHERE ...)``)."""
    if isinstance(node, exp.Filter):
        call = read_call(node.this, sql)
        cond = node.expression.this
        if call.func == "count_star":
            return Call("count", (_when(cond, exp.Literal.number(1)),))
        return Call(call.func, tuple(_when(cond, a) for a in call.args), call.param)
    call = _read(node, sql)
    for arg in call.args:
        for inner in arg.walk():
            if is_aggregate(inner):
                raise unsupported("nested aggregate", sql, node_offset(inner), "aggregate once")
    return call


def _read(node: exp.Expr, sql: str) -> Call:
    name = function_name(node)
    if isinstance(node, exp.Count):
        return _count(node, sql)
    if isinstance(node, exp.CountIf):  # DuckDB: the sum of the condition, NULL if all NULL
        return Call("sum", (exp.Cast(this=node.this.copy(), to=exp.DataType.build("INT")),))
    if type(node) in SIMPLE or (isinstance(node, exp.Anonymous) and name in ANONYMOUS):
        func = SIMPLE.get(type(node)) or ANONYMOUS[name]
        args = list(node.expressions) if isinstance(node, exp.Anonymous) else [node.this]
        _plain(node, name, args, 1, sql)
        if isinstance(node, exp.ApproxDistinct) and node.args.get("accuracy") is not None:
            raise unsupported(f"{name} accuracy", sql, node_offset(node), "the accuracy is fixed")
        return Call(func, (args[0],), 0.5 if isinstance(node, exp.Median) else None)
    if isinstance(node, exp.ApproxQuantile | exp.PercentileCont):
        q = node.args.get("quantile") or node.args.get("expression")
        _plain(node, name, [node.this], 1, sql)
        quantile: AggFunc = (
            "approx_quantile" if isinstance(node, exp.ApproxQuantile) else "quantile_cont"
        )
        return Call(quantile, (node.this,), _quantile(q, name, node, sql))
    if isinstance(node, exp.ArgMin | exp.ArgMax):
        if node.args.get("count") is not None:
            raise unsupported(f"{name} with a count", sql, node_offset(node), "use two arguments")
        _plain(node, name, [node.this, node.expression], 2, sql)
        which: AggFunc = "arg_min" if isinstance(node, exp.ArgMin) else "arg_max"
        return Call(which, (node.this, node.expression))
    hint = HINTS.get(name, "see the supported aggregates in the pipeline SQL reference")
    raise unsupported(f"aggregate function {name}()", sql, node_offset(node), hint)


def _count(node: exp.Count, sql: str) -> Call:
    this = node.this
    if node.expressions:
        raise unsupported("count() with several arguments", sql, node_offset(node), "count one")
    if isinstance(this, exp.Star):
        return Call("count_star", ())
    if isinstance(this, exp.Distinct):
        if len(this.expressions) != 1:
            raise unsupported(
                "count(DISTINCT) of several columns", sql, node_offset(node), "count one column"
            )
        return Call("count_distinct", (this.expressions[0],))
    return Call("count", (this,))


def _plain(node: exp.Expr, name: str, args: list[exp.Expr], n: int, sql: str) -> None:
    if any(isinstance(a, exp.Distinct) for a in args):
        raise unsupported(f"{name}(DISTINCT ...)", sql, node_offset(node), "only count(DISTINCT x)")
    if len(args) != n or any(a is None for a in args):
        raise unsupported(f"{name}() with {len(args)} arguments", sql, node_offset(node), f"{n}")
    if any(isinstance(a, exp.Order) for a in args):
        raise unsupported(f"ORDER BY inside {name}()", sql, node_offset(node), "drop it")


def _quantile(q: exp.Expr | None, name: str, node: exp.Expr, sql: str) -> float:
    try:
        value = float(q.name) if isinstance(q, exp.Literal) and not q.is_string else -1.0
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise unsupported(
            f"{name}() quantile", sql, node_offset(node), "give one number between 0 and 1"
        )
    return value


def _when(cond: exp.Expr, value: exp.Expr) -> exp.Expr:
    return exp.Case(ifs=[exp.If(this=cond.copy(), true=value.copy())])
