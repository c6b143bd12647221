"""Model scoring in pipeline SQL: ``predict('model', a, b, ...)`` and ``predict_proba``.

Each call is taken out of the statement before it is planned and becomes a column
``_pm{i}`` that the model stage computes over the whole micro-batch; the statement
that remains reads that column like any other. The first argument names the model:
``'m'`` (the version the pipeline was created with), ``'m@2'`` (version 2) and
``'m:probabilities'`` (an output other than the first) may be combined (``'m@2:label'``).

>>> import sqlglot
>>> select = sqlglot.parse_one("SELECT k, predict('m@2', a, b * 2) AS p FROM s "
...     "WHERE predict_proba('c', a) > 0.5", dialect="duckdb")
>>> rest, calls = extract_predictions(select, "")
>>> rest.sql("duckdb")
'SELECT k, "_pm0" AS p FROM s WHERE "_pm1" > 0.5'
>>> [(c.model, c.version, c.args, c.proba) for c in calls]
[('m', 2, ('a', 'b * 2'), False), ('c', None, ('a',), True)]
"""

from __future__ import annotations

import re
from dataclasses import replace

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB

from headwater.engine.plan import Column, Plan, Prediction
from headwater.engine.sql.text import node_offset, unsupported

FUNCS = ("predict", "predict_proba")
# sqlglot reads PREDICT as BigQuery's ML.PREDICT (three arguments at most); DuckDB has no
# such function, so in the DuckDB dialect it is left an ordinary call with any arguments.
DuckDB.Parser.FUNCTIONS = {k: v for k, v in DuckDB.Parser.FUNCTIONS.items() if k != "PREDICT"}
REF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(?:@(?P<version>[0-9]+))?(?::(?P<output>.+))?$")
FORM = "predict('model', column, ...) with the model's name as a string literal"


def is_predict(node: exp.Expr) -> bool:
    return isinstance(node, exp.Anonymous) and str(node.name).lower() in FUNCS


def extract_predictions(select: exp.Select, sql: str) -> tuple[exp.Select, tuple[Prediction, ...]]:
    """The SELECT with each predict call replaced by its column, and the calls."""
    calls = [n for n in select.walk() if is_predict(n)]
    out: list[Prediction] = []
    names: set[str] = set()
    for call in calls:
        if any(is_predict(n) for n in call.expressions[1:] for n in n.walk()):
            raise unsupported("predict(...) inside predict(...)", sql, node_offset(call),
                              "score in one pipeline, score its results in another")  # fmt: skip
    for i, call in enumerate(calls):
        column = f"_pm{i}"
        out.append(_prediction(call, column, sql))
        ref = exp.column(column, quoted=True)
        if isinstance(call.parent, exp.Select):  # a bare call in the SELECT list: name it
            name = str(call.name).lower()
            unique, n = name, 1
            while unique in names:
                unique, n = f"{name}_{n}", n + 1
            names.add(unique)
            call.replace(exp.alias_(ref, unique))
        else:
            call.replace(ref)
    return select, tuple(out)


def _prediction(call: exp.Expr, column: str, sql: str) -> Prediction:
    func = str(call.name).lower()
    args = list(call.expressions)
    at = node_offset(call)
    if len(args) < 2:
        raise unsupported(f"{func} with {len(args)} argument(s)", sql, at, FORM)
    first = args[0]
    if not isinstance(first, exp.Literal) or not first.is_string:
        raise unsupported(f"{func}'s model as {first.sql()}", sql, at, FORM)
    ref = REF.match(str(first.this))
    if ref is None:
        raise unsupported(f"model reference {first.sql()}", sql, at,
                          "write 'name', 'name@version' or 'name:output'")  # fmt: skip
    version = int(ref["version"]) if ref["version"] else None
    if func == "predict_proba" and ref["output"]:
        raise unsupported(f"predict_proba of output {ref['output']!r}", sql, at,
                          "use predict('model:output', ...) to read an output")  # fmt: skip
    values = tuple(a.sql(dialect="duckdb") for a in args[1:])
    return Prediction(column, ref["name"], values, version, ref["output"], func == "predict_proba")


def with_predictions(plan: Plan, predictions: tuple[Prediction, ...]) -> Plan:
    """The plan with its predict calls; ``*`` leaves out their hidden columns."""
    if not predictions:
        return plan
    hidden = ", ".join(f'"{p.column}"' for p in predictions)
    projection = tuple(_picked(c, hidden) for c in plan.projection)
    return replace(plan, predictions=predictions, projection=projection)


def _picked(c: Column, hidden: str) -> Column:
    if c.name != "*":
        return c
    if "EXCLUDE (" in c.expr:  # the anomaly stage's columns are left out already
        return Column(c.name, c.expr.replace("EXCLUDE (", f"EXCLUDE ({hidden}, ", 1))
    return Column(c.name, f"{c.expr} EXCLUDE ({hidden})")
