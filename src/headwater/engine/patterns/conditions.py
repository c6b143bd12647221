"""``DEFINE`` conditions: which can run vectorized, and a small evaluator for the rest.

A condition that reads only the current row and ``PREV(col [, n])`` of it is
*row-local*: its value does not depend on how earlier rows were matched, so it is
computed for a whole batch at once by DuckDB (``PREV`` becomes ``LAG ... OVER`` the
partition). A condition that reads the match so far (``LAST(A.x)``, ``FIRST(A.x)``,
``A.x`` for another variable ``A``, ``PREV(A.x)``, running ``AVG/SUM/MIN/MAX/COUNT`` over a
variable) is evaluated per candidate thread by ``compile_python``, which supports
comparisons, ``AND``/``OR``/``NOT``, arithmetic, ``IS [NOT] NULL``, literals and those
functions. ``NEXT`` is refused: it would hold every decision back by a row.

In a condition for ``B``, ``B.x`` and a bare ``x`` mean the current row; ``A.x`` (another
variable) means the last row matched to ``A``; ``PREV(x, n)`` the row ``n`` before.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from headwater.engine.patterns.nfa import Labels

AGGREGATES: dict[type[exp.Expr], str] = {
    exp.Avg: "avg",
    exp.Sum: "sum",
    exp.Min: "min",
    exp.Max: "max",
    exp.Count: "count",
}
DIALECT = "snowflake"  # reads PREV, FIRST and LAST as MATCH_RECOGNIZE writes them


class ConditionError(ValueError):
    """A DEFINE or MEASURES expression the engine cannot run; the message says why."""


def parse_expr(text: str, what: str) -> exp.Expr:
    try:
        node = sqlglot.parse_one(text, read=DIALECT)
    except ParseError as exc:
        raise ConditionError(f"{what}: cannot read {text!r}: {exc}") from exc
    if node is None:
        raise ConditionError(f"{what} is empty")
    return node


def func_name(node: exp.Expr) -> str:
    return str(node.name).upper() if isinstance(node, exp.Anonymous) else ""


def var_of(node: exp.Expr) -> str | None:
    """The pattern variable qualifying a column (``A.price`` -> ``A``), upper-case."""
    table = node.table if isinstance(node, exp.Column) else ""
    return str(table).upper() or None


def check_refs(node: exp.Expr, variables: set[str], columns: set[str], what: str) -> None:
    for n in node.walk():
        name = func_name(n)
        if name == "NEXT":
            raise ConditionError(
                f"{what}: NEXT() is not supported: a streaming match decides on each row "
                "as it arrives; compare with PREV() from the next variable instead"
            )
        if name in ("CLASSIFIER", "MATCH_NUMBER", "RUNNING", "FINAL"):
            raise ConditionError(f"{what}: {name} is not supported")
        if isinstance(n, exp.Column):
            var = var_of(n)
            if var is not None and var not in variables:
                raise ConditionError(f"{what}: {n.sql()} names no pattern variable {var}")
            if not isinstance(n.this, exp.Star) and n.name not in columns:
                raise ConditionError(f"{what}: the stream has no column {n.name!r}")


def prev_args(node: exp.Anonymous, what: str) -> tuple[exp.Column, int]:
    args = node.expressions
    if not args or len(args) > 2 or not isinstance(args[0], exp.Column):
        raise ConditionError(f"{what}: write PREV(column [, n])")
    n = 1
    if len(args) == 2:
        if not (isinstance(args[1], exp.Literal) and args[1].is_int):
            raise ConditionError(f"{what}: the offset of PREV is a whole number")
        n = int(args[1].this)
    return args[0], n


def is_row_local(node: exp.Expr, var: str) -> bool:
    """True if the condition for ``var`` reads only the current row and PREV of it."""
    for n in node.walk():
        if type(n) in AGGREGATES or isinstance(n, exp.First | exp.Last):
            return False
        if isinstance(n, exp.Column) and var_of(n) not in (None, var):
            return False
    return True


def max_prev(nodes: list[exp.Expr]) -> int:
    """The largest PREV offset, i.e. how many earlier rows conditions may read."""
    best = 0
    for node in nodes:
        for n in node.walk():
            if func_name(n) == "PREV" and isinstance(n, exp.Anonymous):
                best = max(best, prev_args(n, "PREV")[1])
    return best


def local_sql(node: exp.Expr, what: str) -> str:
    """DuckDB SQL of a row-local condition over a table with ``_p`` (partition) and
    ``_i`` (order) columns; NULL counts as false."""

    def rewrite(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Anonymous) and func_name(n) == "PREV":
            col, k = prev_args(n, what)
            return sqlglot.parse_one(
                f'LAG("{col.name}", {k}) OVER (PARTITION BY _p ORDER BY _i)', read="duckdb"
            )
        if isinstance(n, exp.Column) and not isinstance(n.this, exp.Star):
            return exp.column(str(n.name), quoted=True)
        return n

    body = node.copy().transform(rewrite).sql(dialect="duckdb")
    return f"coalesce(({body})::BOOLEAN, false)"


# ---- the per-thread evaluator -------------------------------------------------------


@dataclass(slots=True)
class Context:
    """Where a condition is evaluated: the partition's retained rows (``cols`` as Python
    lists from index ``base``), the row being tried, as which variable, and the thread."""

    cols: dict[str, list[Any]]
    base: int
    row: int
    var: str
    labels: Labels

    def value(self, column: str, row: int | None) -> Any:
        if row is None or row < self.base:
            return None
        return self.cols[column][row - self.base]

    def rows_of(self, var: str | None) -> list[int]:
        out = []
        labels = self.labels
        while labels is not None:
            if var is None or labels[1] == var:
                out.append(labels[0])
            labels = labels[2]
        out.reverse()
        if var is None or var == self.var:
            out.append(self.row)
        return out

    def last_of(self, var: str | None) -> int | None:
        if var is None or var == self.var:
            return self.row
        labels = self.labels
        while labels is not None:
            if labels[1] == var:
                return int(labels[0])
            labels = labels[2]
        return None


Fn = Callable[[Context], Any]
BINARY: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.EQ: operator.eq,
    exp.NEQ: operator.ne,
    exp.GT: operator.gt,
    exp.GTE: operator.ge,
    exp.LT: operator.lt,
    exp.LTE: operator.le,
    exp.Add: operator.add,
    exp.Sub: operator.sub,
    exp.Mul: operator.mul,
    exp.Div: operator.truediv,
    exp.Mod: operator.mod,
}


def compile_python(node: exp.Expr, what: str) -> Fn:
    """A Python function of a ``Context`` computing ``node`` with SQL NULL semantics."""
    if isinstance(node, exp.Paren):
        return compile_python(node.this, what)
    if isinstance(node, exp.And | exp.Or):
        return _logic(node, what)
    if isinstance(node, exp.Not):
        inner = compile_python(node.this, what)
        return lambda c: None if (v := inner(c)) is None else not v
    if isinstance(node, exp.Neg):
        inner = compile_python(node.this, what)
        return lambda c: None if (v := inner(c)) is None else -v
    if type(node) in BINARY:
        return _binary(node, what)
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        inner = compile_python(node.this, what)
        return lambda c: inner(c) is None
    if isinstance(node, exp.Literal):
        value: Any = node.this if node.is_string else _number(node.this)
        return lambda c: value
    if isinstance(node, exp.Boolean):
        flag = bool(node.this)
        return lambda c: flag
    if isinstance(node, exp.Null):
        return lambda c: None
    if isinstance(node, exp.Column):
        col, var = str(node.name), var_of(node)
        return lambda c: c.value(col, c.last_of(var))
    return _function(node, what)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def _logic(node: exp.Expr, what: str) -> Fn:
    left, right = compile_python(node.this, what), compile_python(node.expression, what)
    if isinstance(node, exp.And):

        def and_(c: Context) -> Any:
            a = left(c)
            if a is False:
                return False
            b = right(c)
            return False if b is False else (None if a is None or b is None else True)

        return and_

    def or_(c: Context) -> Any:
        a = left(c)
        if a is True:
            return True
        b = right(c)
        return True if b is True else (None if a is None or b is None else False)

    return or_


def _binary(node: exp.Expr, what: str) -> Fn:
    op = BINARY[type(node)]
    left, right = compile_python(node.this, what), compile_python(node.expression, what)

    def run(c: Context) -> Any:
        a, b = left(c), right(c)
        if a is None or b is None:
            return None
        if op is operator.truediv and b == 0:
            return None
        return op(a, b)

    return run


def _function(node: exp.Expr, what: str) -> Fn:
    if isinstance(node, exp.Anonymous) and func_name(node) == "PREV":
        col, k = prev_args(node, what)
        name, var = str(col.name), var_of(col)

        def prev(c: Context) -> Any:
            at = c.last_of(var)
            return None if at is None else c.value(name, at - k)

        return prev
    if isinstance(node, exp.First | exp.Last):
        return _first_last(node, what)
    if type(node) in AGGREGATES:
        return _aggregate(node, AGGREGATES[type(node)], what)
    raise ConditionError(
        f"{what}: {node.sql(dialect=DIALECT)} is not supported in a condition that reads "
        "earlier rows of the match (there: comparisons, AND/OR/NOT, + - * / %, IS NULL, "
        "PREV, FIRST, LAST, AVG, SUM, MIN, MAX, COUNT)"
    )


def _first_last(node: exp.Expr, what: str) -> Fn:
    col = node.this
    if not isinstance(col, exp.Column):
        raise ConditionError(f"{what}: write {type(node).__name__.upper()}(var.column)")
    offset = node.args.get("expression") or node.args.get("offset")
    k = int(offset.this) if isinstance(offset, exp.Literal) else 0
    name, var, first = str(col.name), var_of(col), isinstance(node, exp.First)

    def pick(c: Context) -> Any:
        rows = c.rows_of(var)
        if k >= len(rows):
            return None
        return c.value(name, rows[k] if first else rows[-1 - k])

    return pick


def _aggregate(node: exp.Expr, func: str, what: str) -> Fn:
    arg = node.this
    if isinstance(arg, exp.Distinct):
        raise ConditionError(f"{what}: DISTINCT aggregates are not supported")
    star = isinstance(arg, exp.Star) or (isinstance(arg, exp.Column) and arg.is_star)
    if not (star or isinstance(arg, exp.Column)):
        raise ConditionError(f"{what}: aggregate a column, as in AVG(A.price)")
    var = var_of(arg) if isinstance(arg, exp.Column) else None
    name = None if star else str(arg.name)

    def run(c: Context) -> Any:
        rows = c.rows_of(var)
        if name is None:
            return len(rows)
        values = [v for v in (c.value(name, r) for r in rows) if v is not None]
        if func == "count":
            return len(values)
        if not values:
            return None
        if func == "sum":
            return sum(values)
        if func == "avg":
            return sum(values) / len(values)
        return min(values) if func == "min" else max(values)

    return run
