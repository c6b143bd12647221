"""Cross-field rules: SQL boolean expressions every row must satisfy, per batch.

A rule in the common subset (columns, literals, comparisons, AND/OR/NOT, IS NULL,
IN lists, BETWEEN, + - *) compiles to Arrow compute calls, which cost microseconds
per batch. Anything else runs in DuckDB over the Arrow table (about a millisecond
per batch) in a connection with file and network access disabled and its settings
locked. Either way SQL's three-valued logic holds: a row where the expression is
NULL passes. ``now()`` and ``current_timestamp`` mean the ingest clock's now.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeAlias

import duckdb
import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from headwater.engine.connection import Config, connect_duckdb
from headwater.errors import BadRequest, InvalidSchema
from headwater.ingest.plan import per_schema
from headwater.model.schema import Rule, StreamSchema

Value: TypeAlias = Any  # a pyarrow Array or Scalar (pyarrow ships no type hints)
Evaluate = Callable[[Mapping[str, pa.Array]], Value]
Mask = npt.NDArray[np.bool_]
TS_MS = pa.timestamp("ms", tz="UTC")
FALSE = pa.scalar(False, pa.bool_())
KINDS = {
    "string": "str",
    "json": "str",
    "int": "num",
    "float": "num",
    "bool": "bool",
    "timestamp": "ts",
}
COMPARISONS: dict[type[exp.Expression], str] = {
    exp.EQ: "equal", exp.NEQ: "not_equal", exp.GT: "greater", exp.GTE: "greater_equal",
    exp.LT: "less", exp.LTE: "less_equal",
}  # fmt: skip
ARITHMETIC: dict[type[exp.Expression], str] = {
    exp.Add: "add_checked",
    exp.Sub: "subtract_checked",
    exp.Mul: "multiply_checked",
}
FORBIDDEN = (exp.Select, exp.Subquery, exp.Table, exp.Query, exp.Command)
NOW_FUNCTIONS = {"now", "get_current_timestamp", "transaction_timestamp"}
MAX_BISECT_QUERIES = 64
# Functions a rule may call: each costs time and memory linear in its input. Functions
# whose output can be far larger than their input (repeat, lpad/rpad, range,
# generate_series, list and string builders, format/printf, replace) or whose cost is
# super-linear (levenshtein and other edit distances) are refused when the stream is
# created; with ``MAX_RULE_NODES`` this bounds a rule's work by the size of the batch.
ALLOWED_FUNCTIONS = frozenset((
    "length", "lower", "upper", "trim", "substring", "startswith", "contains", "strposition",
    "left", "right", "concat", "coalesce", "nullif", "greatest", "least", "case", "if", "cast",
    "trycast", "abs", "round", "floor", "ceil", "sqrt", "ln", "sign", "pow", "mod",
    "timestamptrunc", "datetrunc", "extract", "year", "month", "day", "hour", "minute",
    "second", "dayofweek", "dayofyear", "week", "quarter", "datediff", "timestampdiff",
    "timetounix", "unixtotime", "regexplike", "regexpfullmatch", "jsonextract",
    "jsonextractscalar", "strlen", "epoch_ms", "isnan", "isinf",
))  # fmt: skip
MAX_RULE_NODES = 200


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    sql: str
    arrow: Evaluate | None
    columns: tuple[str, ...]  # the fields the rule reads

    @property
    def message(self) -> str:
        return self.rule.message or f"the rule `{self.rule.expr}` does not hold for this row"


class _NotArrow(Exception):
    """The expression leaves the subset Arrow evaluates with SQL semantics."""


@per_schema
def compile_rules(schema: StreamSchema) -> list[CompiledRule]:
    """Parse and check a schema's rules; raises InvalidSchema naming the bad rule."""
    try:
        return _compile(msgspec.json.encode(schema))
    except RecursionError:  # the parser recurses once per level: deep SQL is bad input
        raise InvalidSchema(
            "a rule nests too deeply to parse; write it with fewer nested parentheses",
            code="sql_too_deep",
        ) from None


@lru_cache(maxsize=256)
def _compile(encoded: bytes) -> list[CompiledRule]:
    schema = msgspec.json.decode(encoded, type=StreamSchema)
    kinds = {f.name.lower(): (f.name, KINDS[f.type]) for f in schema.fields}
    return [_compile_rule(rule, kinds) for rule in schema.rules]


def _compile_rule(rule: Rule, kinds: dict[str, tuple[str, str]]) -> CompiledRule:
    try:
        tree = sqlglot.parse_one(rule.expr, read="duckdb")
    except sqlglot.errors.SqlglotError as exc:
        raise InvalidSchema(f"rule {rule.expr!r} is not a SQL expression: {exc}") from exc
    for node in tree.walk():
        if isinstance(node, FORBIDDEN):
            raise InvalidSchema(
                f"rule {rule.expr!r}: a rule is one expression over the row, no queries"
            )
        if isinstance(node, exp.Column) and node.name.lower() not in kinds:
            raise InvalidSchema(f"rule {rule.expr!r} names {node.name!r}, which is not a field")
    tree = tree.transform(_now_as_column)
    _check_cost(rule, tree)
    sql = tree.sql(dialect="duckdb")
    _bind(rule, sql, kinds)
    try:
        evaluate, kind = _arrow(tree, kinds)
        arrow = evaluate if kind == "bool" else None
    except _NotArrow:
        arrow = None
    names = sorted(
        {kinds[c.name.lower()][0] for c in tree.find_all(exp.Column) if c.name != "__now"}
    )
    return CompiledRule(rule, sql, arrow, tuple(names))


def _check_cost(rule: Rule, tree: exp.Expression) -> None:
    """Refuse a rule whose cost is not bounded by its input: see ``ALLOWED_FUNCTIONS``."""
    nodes = 0
    for node in tree.walk():
        nodes += 1
        if not isinstance(node, exp.Func) or isinstance(node, exp.Connector):
            continue
        name = node.name.lower() if isinstance(node, exp.Anonymous) else node.key
        if name not in ALLOWED_FUNCTIONS:
            shown = node.sql_name() if not isinstance(node, exp.Anonymous) else node.name
            raise InvalidSchema(
                f"rule {rule.expr!r} calls {shown.lower()}, which a rule may not use: its cost "
                "is not bounded by the row; see docs/streams.md for the functions rules may call",
                code="rule_too_costly",
            )
    if nodes > MAX_RULE_NODES:
        raise InvalidSchema(
            f"rule {rule.expr!r} has {nodes} terms; a rule may have at most {MAX_RULE_NODES}, "
            "split it into several rules",
            code="rule_too_costly",
        )


def needs_sql(schema: StreamSchema) -> bool:
    """Whether a rule of ``schema`` runs in DuckDB (a millisecond or more per batch)."""
    return bool(schema.rules) and any(r.arrow is None for r in compile_rules(schema))


def _bind(rule: Rule, sql: str, kinds: dict[str, tuple[str, str]]) -> None:
    """Let DuckDB bind the rule on an empty batch: unknown functions and type errors surface now."""
    types = {"str": pa.string(), "num": pa.float64(), "bool": pa.bool_(), "ts": TS_MS}
    empty = pa.table({name: pa.array([], types[kind]) for name, kind in kinds.values()})
    empty = empty.append_column("__now", pa.array([], TS_MS))
    con = _connection()
    try:
        con.register("__batch", empty)
        con.execute(f"SELECT ({sql}) IS FALSE FROM __batch").fetchall()
    except duckdb.Error as exc:
        raise InvalidSchema(
            f"rule {rule.expr!r} does not compile: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        con.unregister("__batch")


def _now_as_column(node: exp.Expression) -> exp.Expression:
    is_now = isinstance(node, exp.CurrentTimestamp) or (
        isinstance(node, exp.Anonymous) and str(node.this).lower() in NOW_FUNCTIONS
    )
    return exp.column("__now") if is_now else node


def _arrow(node: exp.Expression, kinds: dict[str, tuple[str, str]]) -> tuple[Evaluate, str]:
    """Compile ``node`` to a function of the columns, with its result kind."""
    if isinstance(node, exp.Paren):
        return _arrow(node.this, kinds)
    if isinstance(node, exp.Column):
        if node.name == "__now":
            raise _NotArrow
        name, kind = kinds[node.name.lower()]
        return (lambda cols: cols[name]), kind
    if isinstance(node, exp.Literal | exp.Boolean | exp.Null):
        scalar, kind = _literal(node)
        return (lambda cols: scalar), kind
    if isinstance(node, exp.Neg):
        inner, kind = _arrow(node.this, kinds)
        _require(kind == "num")
        return (lambda cols: pc.negate_checked(inner(cols))), "num"
    if type(node) in ARITHMETIC:
        return _binary(ARITHMETIC[type(node)], node, kinds, {"num"}, "num")
    if type(node) in COMPARISONS:
        return _binary(COMPARISONS[type(node)], node, kinds, {"num", "str", "bool", "ts"}, "bool")
    if isinstance(node, exp.And | exp.Or):
        op = "and_kleene" if isinstance(node, exp.And) else "or_kleene"
        return _binary(op, node, kinds, {"bool"}, "bool")
    if isinstance(node, exp.Not):
        inner, kind = _arrow(node.this, kinds)
        _require(kind == "bool")
        return (lambda cols: pc.invert(inner(cols))), "bool"
    if isinstance(node, exp.Is) and isinstance(node.expression, exp.Null):
        inner, _ = _arrow(node.this, kinds)
        return (lambda cols: pc.is_null(inner(cols))), "bool"
    if isinstance(node, exp.Between) and not node.args.get("symmetric"):
        low = exp.GTE(this=node.this, expression=node.args["low"])
        high = exp.LTE(this=node.this, expression=node.args["high"])
        return _arrow(exp.And(this=low, expression=high), kinds)
    if isinstance(node, exp.In) and not node.args.get("query"):
        return _in_list(node, kinds)
    raise _NotArrow


def _binary(
    op: str, node: exp.Expression, kinds: dict[str, tuple[str, str]], allowed: set[str], out: str
) -> tuple[Evaluate, str]:
    left, left_kind = _arrow(node.this, kinds)
    right, right_kind = _arrow(node.expression, kinds)
    # Mixed kinds (a timestamp against text) need SQL's implicit casts, and NULL
    # literals SQL's typing rules: both are DuckDB's job.
    _require(left_kind == right_kind and left_kind in allowed)
    function = getattr(pc, op)
    return (lambda cols: function(left(cols), right(cols))), out


def _in_list(node: exp.In, kinds: dict[str, tuple[str, str]]) -> tuple[Evaluate, str]:
    probe, kind = _arrow(node.this, kinds)
    literals = [_literal(item) for item in node.expressions]
    # A NULL in the list makes a miss NULL rather than FALSE: leave that to DuckDB.
    _require(all(k == kind for _, k in literals) and kind in ("num", "str", "bool"))
    values = pa.array([s.as_py() for s, _ in literals])

    def evaluate(cols: Mapping[str, pa.Array]) -> Value:
        x = probe(cols)
        return pc.if_else(
            pc.is_valid(x), pc.is_in(x, value_set=values), pa.scalar(None, pa.bool_())
        )

    return evaluate, "bool"


def _literal(node: exp.Expression) -> tuple[pa.Scalar, str]:
    if isinstance(node, exp.Null):
        return pa.scalar(None), "null"
    if isinstance(node, exp.Boolean):
        return pa.scalar(bool(node.this)), "bool"
    if isinstance(node, exp.Neg) and isinstance(node.this, exp.Literal) and not node.this.is_string:
        scalar, kind = _literal(node.this)
        return pa.scalar(-scalar.as_py()), kind
    if isinstance(node, exp.Literal):
        if node.is_string:
            return pa.scalar(str(node.this)), "str"
        text = str(node.this)
        value = int(text) if text.lstrip("-").isdigit() else float(text)
        _require(isinstance(value, float) or -(2**63) <= value < 2**63)
        return pa.scalar(value), "num"
    raise _NotArrow


def _require(condition: bool) -> None:
    if not condition:
        raise _NotArrow


def failing(
    rule: CompiledRule, table: pa.Table, now_ms: int, deadline: float
) -> tuple[Mask, dict[int, str]]:
    """Rows of ``table`` where the rule is FALSE, and rows where it cannot be evaluated.

    DuckDB's work stops at ``deadline`` (``time.monotonic()``): the body is refused (400).
    """
    if rule.arrow is not None:
        try:
            result = rule.arrow({name: _array(table.column(name)) for name in rule.columns})
            return _false_mask(result, table.num_rows), {}
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass  # e.g. checked arithmetic overflowed: let DuckDB give the SQL answer
    return _duckdb_failing(rule, table, now_ms, deadline)


def _array(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _false_mask(result: Value, n: int) -> Mask:
    if isinstance(result, pa.Scalar):
        return np.full(n, result.as_py() is False)
    false: Mask = pc.invert(result).fill_null(FALSE).to_numpy(zero_copy_only=False).astype(bool)
    return false


_local = threading.local()


def _connection() -> duckdb.DuckDBPyConnection:
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None:
        config: Config = {
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "threads": 1,
            "memory_limit": "256MB",
        }
        con = connect_duckdb(config=config)
        _local.con = con
    return con


def _duckdb_failing(
    rule: CompiledRule, table: pa.Table, now_ms: int, deadline: float
) -> tuple[Mask, dict[int, str]]:
    n = table.num_rows
    batch = table.append_column("__pos", pa.array(np.arange(n, dtype=np.int64)))
    batch = batch.append_column("__now", pa.array(np.full(n, now_ms, dtype=np.int64)).cast(TS_MS))
    mask = np.zeros(n, dtype=bool)
    errors: dict[int, str] = {}
    budget = [MAX_BISECT_QUERIES]
    _bisect(rule, batch, mask, errors, budget, deadline)
    return mask, errors


def _bisect(
    rule: CompiledRule,
    batch: pa.Table,
    mask: Mask,
    errors: dict[int, str],
    budget: list[int],
    deadline: float,
) -> None:
    """Run the rule; when a row makes DuckDB fail, halve the batch to find which."""
    con = _connection()
    budget[0] -= 1
    try:
        con.register("__batch", batch)
        found = _timed(con, f"SELECT __pos FROM __batch WHERE ({rule.sql}) IS FALSE", deadline)
        mask[found["__pos"].astype(np.int64)] = True
        return
    except duckdb.InterruptException as exc:
        raise BadRequest(
            f"the stream's rule `{rule.rule.expr}` took longer than its time budget on this "
            "body; send fewer rows per request or simplify the rule",
            code="rule_timeout",
        ) from exc
    except duckdb.Error as exc:
        if batch.num_rows == 1 or budget[0] <= 0:
            for pos in batch["__pos"].to_pylist():
                errors[pos] = f"the rule could not be evaluated on this row: {exc}".splitlines()[0]
            return
    finally:
        con.unregister("__batch")
    half = batch.num_rows // 2
    _bisect(rule, batch.slice(0, half), mask, errors, budget, deadline)
    _bisect(rule, batch.slice(half), mask, errors, budget, deadline)


def _timed(con: duckdb.DuckDBPyConnection, sql: str, deadline: float) -> dict[str, Any]:
    """Run ``sql``, interrupting it at ``deadline``."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise duckdb.InterruptException("the rule's time budget is spent")
    timer = threading.Timer(remaining, con.interrupt)
    timer.start()
    try:
        found: dict[str, Any] = con.execute(sql).fetchnumpy()
        return found
    finally:
        timer.cancel()
