"""``MEASURES``: one row per match, computed by DuckDB over the matched rows at once.

The matched rows of a batch of matches form one table with ``_m`` (match number),
``_v`` (the variable each row matched) and ``_o`` (its place in the match); each
measure becomes an aggregate over its match's rows:

- ``FIRST(A.x [, n])`` / ``LAST(A.x [, n])``: the n-th first / last ``x`` among ``A`` rows;
- ``A.x`` outside an aggregate: ``LAST(A.x)``; a bare ``x``: its value in the last row;
- ``AVG/SUM/MIN/MAX/COUNT(A.x)``, ``COUNT(A.*)``: over the rows matched to ``A``
  (over every row of the match without a variable).

Any DuckDB expression may combine them (``LAST(B.price) - FIRST(A.price)``).
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from headwater.engine.patterns.conditions import (
    AGGREGATES,
    ConditionError,
    check_refs,
    func_name,
    parse_expr,
    var_of,
)

MATCH, VAR, ORD = "_m", "_v", "_o"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _where(var: str | None) -> str:
    return f" FILTER (WHERE {VAR} = '{var}')" if var else ""


def measure_sql(text: str, name: str, variables: set[str], columns: set[str]) -> str:
    """DuckDB SQL for one measure over the matched-rows table, grouped by ``_m``."""
    what = f"MEASURES {name}"
    node = parse_expr(text, what)
    check_refs(node, variables, columns, what)
    for n in node.walk():
        if func_name(n) == "PREV":
            raise ConditionError(f"{what}: PREV is for DEFINE; use FIRST/LAST in MEASURES")

    def rewrite(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.First | exp.Last):
            col = n.this
            if not isinstance(col, exp.Column):
                raise ConditionError(f"{what}: write FIRST/LAST(var.column)")
            offset = n.args.get("expression")
            k = int(offset.this) if isinstance(offset, exp.Literal) else 0
            index = k + 1 if isinstance(n, exp.First) else -(k + 1)
            body = f"(list({_q(col.name)} ORDER BY {ORD}){_where(var_of(col))})[{index}]"
            return sqlglot.parse_one(body, read="duckdb")
        if type(n) in AGGREGATES:
            return _aggregate(n, what)
        if isinstance(n, exp.Column) and not isinstance(n.this, exp.Star):
            body = f"(list({_q(n.name)} ORDER BY {ORD}){_where(var_of(n))})[-1]"
            return sqlglot.parse_one(body, read="duckdb")
        return n

    return str(node.transform(rewrite).sql(dialect="duckdb"))


def _aggregate(n: exp.Expr, what: str) -> exp.Expr:
    func = AGGREGATES[type(n)]
    arg = n.this
    if isinstance(arg, exp.Distinct):
        raise ConditionError(f"{what}: DISTINCT aggregates are not supported")
    star = isinstance(arg, exp.Star) or (isinstance(arg, exp.Column) and arg.is_star)
    if not (star or isinstance(arg, exp.Column)):
        raise ConditionError(f"{what}: aggregate a column, as in AVG(A.price)")
    var = var_of(arg) if isinstance(arg, exp.Column) else None
    inner = "*" if star else _q(arg.name)
    return sqlglot.parse_one(f"{func}({inner}){_where(var)}", read="duckdb")


def measures_query(source: str, partition_by: list[str], measures: list[tuple[str, str]]) -> str:
    """The whole query: partition columns, then each ``(name, sql)`` measure."""
    items = [f"(list({_q(p)} ORDER BY {ORD}))[1] AS {_q(p)}" for p in partition_by]
    items += [f"{sql} AS {_q(name)}" for name, sql in measures]
    return f"SELECT {', '.join(items)} FROM {source} GROUP BY {MATCH} ORDER BY {MATCH}"


__all__ = ["MATCH", "ORD", "VAR", "measure_sql", "measures_query"]
