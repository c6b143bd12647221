"""Anomaly functions in pipeline SQL, written as window functions over a key's history.

``zscore(temperature) OVER (PARTITION BY device_id ORDER BY ts)`` and its kin are taken
out of the SELECT (and ``QUALIFY``) before the rest is planned: each becomes a column
``_an{i}`` that the scoring stage computes, and the statement that remains is a plain
stateless one. Every call in a pipeline shares one ``PARTITION BY`` and ``ORDER BY``.

>>> import sqlglot
>>> select = sqlglot.parse_one("SELECT k, zscore(v) OVER (PARTITION BY k ORDER BY ts) "
...     "FROM s QUALIFY is_anomaly(v, 4) OVER (PARTITION BY k ORDER BY ts)", dialect="duckdb")
>>> rest, scoring, qualify = extract_scoring(select, "")
>>> rest.sql("duckdb"), qualify
('SELECT k, "_an0" AS zscore FROM s', '"_an1"')
>>> [(s.func, s.value, s.threshold) for s in scoring.scores]
[('zscore', 'v', 3.0), ('is_anomaly', 'v', 4.0)]
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, get_args

from sqlglot import exp

from headwater.engine.plan import Column, Method, Plan, Score, Scoring, Season
from headwater.engine.sql.text import node_offset, unsupported

FUNCS = ("zscore", "ewma", "ewma_zscore", "seasonal_zscore", "anomaly_score", "is_anomaly",
         "cusum")  # fmt: skip
CUSUM_H = 6.0  # the CUSUM threshold when none is given, in deviations
CUSUM_WARMUP = 30  # values a CUSUM reference is learned from, when not given
# the optional arguments after the value, in order
SIGNATURES: dict[str, tuple[str, ...]] = {
    "zscore": ("warmup",),
    "ewma": ("alpha",),
    "ewma_zscore": ("alpha", "warmup"),
    "seasonal_zscore": ("season", "warmup"),
    "anomaly_score": ("method", "alpha"),
    "is_anomaly": ("threshold", "method", "alpha"),
    "cusum": ("slack", "threshold", "warmup"),
}
REQUIRED = {"ewma": 1, "ewma_zscore": 1, "seasonal_zscore": 1}
FORM = "zscore(value) OVER (PARTITION BY key ORDER BY event_time)"


def is_score(node: exp.Expr) -> bool:
    return isinstance(node, exp.Window) and _name(node.this) in FUNCS


def extract_scoring(select: exp.Select, sql: str) -> tuple[exp.Select, Scoring | None, str | None]:
    """The SELECT without its anomaly calls, the scoring they ask for, and QUALIFY's SQL."""
    qualify = select.args.get("qualify")
    windows = [w for item in select.expressions for w in item.find_all(exp.Window)]
    windows += list(qualify.find_all(exp.Window)) if qualify is not None else []
    calls = [w for w in windows if is_score(w)]
    where_ = select.args.get("where")
    if where_ is not None and any(is_score(w) for w in where_.find_all(exp.Window)):
        raise unsupported("anomaly function in WHERE", sql, node_offset(where_), "use QUALIFY")
    if not calls:
        return select, None, None
    if select.args.get("group") is not None:
        raise unsupported(
            "anomaly functions with GROUP BY", sql, node_offset(select.args["group"]),
            "score the rows in one pipeline, aggregate its results in another",
        )  # fmt: skip
    partition, order = _frame(calls[0], sql)
    scores = []
    names: set[str] = set()
    for i, call in enumerate(calls):
        if _frame(call, sql) != (partition, order):
            raise unsupported(
                "anomaly functions over different windows", sql, node_offset(call),
                "give every call in a pipeline the same PARTITION BY and ORDER BY",
            )  # fmt: skip
        scores.append(_score(call, f"_an{i}", sql))
        ref = exp.column(f"_an{i}", quoted=True)
        parent = call.parent
        if isinstance(parent, exp.Select):  # a bare call in the SELECT list: name it
            name = _unique(_name(call.this), names)
            call.replace(exp.alias_(ref, name))
        else:
            call.replace(ref)
    qualify_sql = None
    if qualify is not None:
        qualify_sql = str(select.args["qualify"].this.sql(dialect="duckdb"))
        select.set("qualify", None)
    return select, Scoring(partition, order, tuple(scores)), qualify_sql


def _name(node: exp.Expr) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower()
    return type(node).__name__.lower()


def _unique(name: str, taken: set[str]) -> str:
    out, n = name, 1
    while out in taken:
        out, n = f"{name}_{n}", n + 1
    taken.add(out)
    return out


def _frame(call: exp.Window, sql: str) -> tuple[tuple[str, ...], str]:
    if call.args.get("spec") is not None:
        raise unsupported(
            "a window frame (ROWS/RANGE) on an anomaly function", sql, node_offset(call),
            "the history is the key's whole past; use ewma_zscore(v, alpha) to weigh recent values more",
        )  # fmt: skip
    order = call.args.get("order")
    keys = order.expressions if order is not None else []
    if len(keys) != 1 or not isinstance(keys[0].this, exp.Column) or keys[0].args.get("desc"):
        raise unsupported(
            "an anomaly function without ORDER BY <event time column>", sql, node_offset(call), FORM
        )
    partition = tuple(p.sql(dialect="duckdb") for p in call.args.get("partition_by") or [])
    return partition, str(keys[0].this.name)


def _score(call: exp.Window, column: str, sql: str) -> Score:
    func = _name(call.this)
    args = list(call.this.expressions)
    spec = SIGNATURES[func]
    at = node_offset(call)
    if not args or len(args) > 1 + len(spec) or len(args) - 1 < REQUIRED.get(func, 0):
        wanted = ", ".join(["value", *spec])
        raise unsupported(f"{func} with {len(args)} arguments", sql, at, f"call {func}({wanted})")
    options: dict[str, Any] = {}
    for name, node in zip(spec, args[1:], strict=False):
        options[name] = _literal(func, name, node, sql)
    if func == "cusum" or (func == "anomaly_score" and options.get("method") == "cusum"):
        options.setdefault("threshold", CUSUM_H)
    if func == "cusum" or options.get("method") == "cusum":
        options.setdefault("warmup", CUSUM_WARMUP)
    return Score(func, column, args[0].sql(dialect="duckdb"), **options)  # type: ignore[arg-type]


def _literal(func: str, name: str, node: exp.Expr, sql: str) -> Any:
    at = node_offset(node)
    if not isinstance(node, exp.Literal):
        raise unsupported(f"{func}'s {name} as an expression", sql, at, "write a constant")
    if name in ("method", "season"):
        allowed = get_args(Method) if name == "method" else get_args(Season)
        if not node.is_string or node.this not in allowed:
            raise unsupported(f"{func} {name} {node.sql()}", sql, at, f"use one of {allowed}")
        return node.this
    value = float(node.this) if node.is_number else None
    if value is None:
        raise unsupported(f"{func}'s {name} {node.sql()}", sql, at, "write a number")
    if name == "alpha" and not 0.0 < value <= 1.0:
        raise unsupported(f"{func} alpha {value:g}", sql, at, "alpha is a weight in (0, 1]")
    if name == "warmup":
        if value < 0 or value != int(value):
            raise unsupported(f"{func} warmup {value:g}", sql, at, "warmup is a count of values")
        return int(value)
    if name == "slack" and value < 0:
        raise unsupported(f"{func} slack {value:g}", sql, at, "a slack in deviations >= 0")
    if name == "threshold" and value <= 0:
        raise unsupported(f"{func} threshold {value:g}", sql, at, "a threshold in deviations > 0")
    return value


def scored_plan(plan: Plan, scoring: Scoring, qualify: str | None, select: exp.Select) -> Plan:
    """A stateless plan made to score first: WHERE moves before scoring, QUALIFY after."""
    sql = plan.sql
    if plan.joins:
        raise unsupported(
            "a JOIN with anomaly functions", sql, node_offset(select),
            "score in one pipeline, enrich its results in another",
        )  # fmt: skip
    hidden = ", ".join(f'"{s.column}"' for s in scoring.scores)
    projection = tuple(_picked(c, hidden) for c in plan.projection)
    return replace(
        plan, scoring=replace(scoring, filter=plan.filter), filter=qualify, projection=projection
    )


def _picked(c: Column, hidden: str) -> Column:
    """A projection column; a bare score or column under an alias is a plain pick."""
    if c.name == "*":
        return Column(c.name, f"{c.expr} EXCLUDE ({hidden})")
    name = c.expr.strip('"')
    if c.source is None and c.expr in (f'"{name}"', name) and name.isidentifier():
        return Column(c.name, c.expr, name)
    return c
