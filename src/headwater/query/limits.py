"""The caps every user query runs under: SQL size, time, memory and answer bytes.

One ``QueryBudget`` follows a query from its first byte of SQL to its last byte of JSON:

1. ``check_sql_text`` measures the text before any parser sees it (characters, tokens,
   nesting, operators chained in one group): sqlglot recurses once per level, so deep
   or very long SQL is refused as ``sql_too_long`` / ``sql_too_deep`` instead of
   ending in a ``RecursionError``.
2. ``QueryBudget.parse`` runs the parse in its own thread and waits only until the
   deadline: parsing counts against ``query_timeout_s``.
3. ``bound_values`` rewrites the functions whose output size is set by an argument
   (``repeat``, ``lpad``, ``range`` as a list, ...). DuckDB builds such a value in one
   call, outside its buffer manager and deaf to interruption, so the size is checked
   before the call (``query_too_large``).
4. ``guarded.fetch`` (``headwater.query.guarded``) runs the statement with a watcher
   that interrupts it at the deadline or when the process grew by more than
   ``query_memory_limit``, and counts answer bytes batch by batch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlglot import exp

from headwater.errors import QueryError

T = TypeVar("T")

LIMIT_CODES = frozenset(
    {"query_timeout", "query_out_of_memory", "answer_too_large", "query_too_large",
     "sql_too_long", "sql_too_deep", "too_many_queries"}
)  # fmt: skip
ELEMENT_BYTES = 8  # a list element counts as 8 bytes (BIGINT, DOUBLE, TIMESTAMP)
VALUE_MARKER = "hw_value_too_large"  # the text our error() guards raise, mapped to query_too_large
# Tokens as the checks need them: quoted text and comments are single tokens.
_TOKEN = re.compile(
    r"""'[^']*(?:''[^']*)*'?|"[^"]*(?:""[^"]*)*"?|--[^\n]*|/\*.*?(?:\*/|$)|\$\$.*?(?:\$\$|$)"""
    r"""|[A-Za-z_][A-Za-z0-9_$]*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\|\||<=|>=|<>|!=|::|->>|->|\S""",
    re.DOTALL,
)
_OPERATORS = frozenset({"+", "-", "*", "/", "%", "||", "=", "<", ">", "<=", ">=", "<>", "!=", "and", "or"})  # fmt: skip
_OPEN = frozenset({"(", "[", "{", "case"})
_CLOSE = frozenset({")", "]", "}", "end"})


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """The caps of one user query (settings ``query_*``; see docs/configuration.md)."""

    timeout_s: float = 10.0
    memory_bytes: int = 1024**3
    max_answer_bytes: int = 64 * 1024**2
    max_value_bytes: int = 256 * 1024
    max_sql_chars: int = 100_000
    max_sql_depth: int = 32
    max_sql_tokens: int = 20_000
    max_chain: int = 500  # binary operators in one parenthesised group

    @classmethod
    def for_server_sql(cls, timeout_s: float) -> QueryLimits:
        """Caps for SQL the server writes itself (e.g. a quarantine replay's long
        ``_offset IN (...)`` list): the default caps, without the text size caps."""
        return cls(timeout_s=timeout_s, max_sql_chars=2**62, max_sql_tokens=2**62)

    @classmethod
    def from_settings(cls, settings: Any) -> QueryLimits:
        return cls(
            timeout_s=settings.query_timeout_s,
            memory_bytes=parse_bytes(settings.query_memory_limit),
            max_answer_bytes=parse_bytes(settings.query_max_answer_bytes),
            max_value_bytes=parse_bytes(settings.query_max_value_bytes),
            max_sql_chars=settings.query_max_sql_chars,
            max_sql_depth=settings.query_max_sql_depth,
        )


def parse_bytes(text: str | int) -> int:
    """``"256MB"`` / ``"1GiB"`` / ``1048576`` -> bytes (units are powers of 1024)."""
    if isinstance(text, int):
        return text
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)I?B?\s*", text.upper())
    if found is None:
        raise ValueError(f"{text!r} is not a size; write e.g. 512MB or 2GB")
    power = " KMGT".index(found.group(2) or " ")
    return int(float(found.group(1)) * 1024**power)


def check_sql_text(sql: str, limits: QueryLimits) -> None:
    """Refuse SQL too long or too deep to parse safely, in one linear scan of its text."""
    if len(sql) > limits.max_sql_chars:
        raise QueryError(
            f"the query is {len(sql):,} characters long; the limit is {limits.max_sql_chars:,} "
            "(setting query_max_sql_chars): shorten it, e.g. move long value lists into a table",
            code="sql_too_long",
        )
    tokens = 0
    groups = [0]  # operators chained so far in each open group, innermost last
    for token in _TOKEN.findall(sql):
        tokens += 1
        word = token.lower()
        if word in _OPEN:
            groups.append(0)
            if len(groups) - 1 > limits.max_sql_depth:
                raise _too_deep(f"nests deeper than {limits.max_sql_depth} levels")
        elif word in _CLOSE and len(groups) > 1:
            groups.pop()
        elif word in _OPERATORS:
            groups[-1] += 1
            if groups[-1] > limits.max_chain:
                raise _too_deep(f"chains more than {limits.max_chain} operators in one expression")
    if tokens > limits.max_sql_tokens:
        raise QueryError(
            f"the query has {tokens:,} tokens; the limit is {limits.max_sql_tokens:,}: "
            "shorten it, e.g. move long value lists into a table",
            code="sql_too_long",
        )


def without_recursion_error(fn: Callable[[], T]) -> T:
    """``fn()``, with a parser's ``RecursionError`` answered as ``sql_too_deep``."""
    try:
        return fn()
    except RecursionError:
        raise _too_deep("nests too deeply to parse") from None


def _too_deep(what: str) -> QueryError:
    return QueryError(
        f"the query {what} (setting query_max_sql_depth): "
        "split it into CTEs or put long value lists in a table",
        code="sql_too_deep",
    )


_PARSERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hw-sql-parse")


@dataclass(slots=True)
class QueryBudget:
    """One query's limits and the moment its time runs out (``time.monotonic``)."""

    limits: QueryLimits
    deadline: float = field(default=0.0)

    @classmethod
    def start(cls, limits: QueryLimits) -> QueryBudget:
        return cls(limits, time.monotonic() + limits.timeout_s)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check_time(self) -> None:
        if self.remaining() <= 0:
            raise self.timeout_error()

    def timeout_error(self) -> QueryError:
        return QueryError(
            f"the query ran longer than {self.limits.timeout_s:g}s (setting query_timeout_s) "
            "and was stopped; narrow the time range, filter or aggregate more, or add a LIMIT",
            code="query_timeout",
        )

    def transform(self, tree: exp.Expr) -> exp.Expr:
        """The rewrite every query gets before it runs (``bound_values``)."""
        return bound_values(tree, self.limits)

    def parse(self, sql: str, parse: Callable[[str], T]) -> T:
        """``parse(sql)`` after the text checks, within the deadline.

        The parse runs in a helper thread so the answer never waits past the deadline;
        a parse left behind is bounded by the text checks and finishes on its own.
        """
        check_sql_text(sql, self.limits)
        future = _PARSERS.submit(without_recursion_error, lambda: parse(sql))
        try:
            return future.result(timeout=max(self.remaining(), 0.0))
        except FutureTimeout:
            raise self.timeout_error() from None


def bound_values(tree: exp.Expr, limits: QueryLimits) -> exp.Expr:
    """Rewrite calls that build one value of an argument-given size so they stay bounded.

    ``range``/``generate_series`` as lists, ``repeat``, ``lpad``/``rpad``,
    ``list_resize``/``array_resize``, ``bar`` and ``equi_width_bins`` check their size
    argument first (``error()`` in a ``CASE``); ``printf``/``format`` take only literal
    formats with small widths. Row generators in ``FROM`` stream and stay as they are.
    """
    _keep_column_names(tree)
    for node in list(tree.find_all(exp.Func)):
        if isinstance(node.parent, (exp.From, exp.Join, exp.Lateral, exp.Table)):
            continue  # row generators in FROM stream in chunks
        _bounded(node, limits.max_value_bytes)
    return tree


_SIZED = frozenset({"list_resize", "array_resize", "bar", "equi_width_bins", "printf", "sprintf"})


def _sized(node: exp.Expr) -> bool:
    """Whether ``node`` is a call whose output size an argument sets."""
    if isinstance(node, (exp.GenerateSeries, exp.Repeat, exp.Pad, exp.Format)):
        return True
    return isinstance(node, exp.Anonymous) and node.name.lower() in _SIZED


def _keep_column_names(tree: exp.Expr) -> None:
    """Name unnamed result columns that hold a bounded call as the user wrote them."""
    for select in tree.find_all(exp.Select):
        for column in select.expressions:
            named = isinstance(column, (exp.Alias, exp.Column, exp.Star))
            if not named and any(_sized(node) for node in column.find_all(exp.Func)):
                column.replace(exp.alias_(column.copy(), column.sql(dialect="duckdb"), quoted=True))


def _bounded(node: exp.Func, cap: int) -> None:
    name = node.sql_name().lower() if not isinstance(node, exp.Anonymous) else node.name.lower()
    args = [a for a in node.args.get("expressions") or []]
    if isinstance(node, exp.GenerateSeries):
        _bounded_series(node, cap)
    elif isinstance(node, exp.Repeat):
        size = exp.Mul(this=_p(node.args["times"]), expression=_length(node.this))
        node.set("times", _guard(node.args["times"], size, cap, "repeat"))
    elif isinstance(node, exp.Pad):
        node.set("expression", _guard(node.args["expression"], node.args["expression"], cap, name))
    elif name in ("list_resize", "array_resize") and len(args) >= 2:
        args[1].replace(_guard(args[1], _elements(args[1]), cap, name))
    elif name == "bar" and len(args) >= 4:
        args[3].replace(_guard(args[3], args[3], cap, name))
    elif name == "equi_width_bins" and len(args) >= 3:
        args[2].replace(_guard(args[2], _elements(args[2]), cap, name))
    elif name in ("printf", "format", "sprintf"):
        _check_format(node, cap)
    return None


def _bounded_series(node: exp.GenerateSeries, cap: int) -> None:
    """``range(a, b, step)`` as a list: ``b`` may lie at most ``cap`` bytes of elements
    past ``a``. Written with ``+``, ``*`` and comparisons only, so it holds for numbers
    and for timestamps with an interval step alike."""
    start, step = _p(node.args["start"]), _p(node.args.get("step") or exp.Literal.number(1))
    end = node.args["end"]
    furthest = exp.Add(
        this=start,
        expression=exp.Mul(this=step, expression=exp.Literal.number(cap // ELEMENT_BYTES)),
    )
    ascending = exp.GT(
        this=exp.Add(this=start.copy(), expression=step.copy()), expression=start.copy()
    )
    past = exp.Case(
        ifs=[exp.If(this=ascending, true=exp.GT(this=_p(end), expression=furthest))],
        default=exp.LT(this=_p(end), expression=furthest.copy()),
    )
    name = "range" if node.args.get("is_end_exclusive") else "generate_series"
    node.set("end", _guard(end, past, 0, name, reported=cap))


def _elements(count: exp.Expr) -> exp.Expr:
    return exp.Mul(this=_p(count), expression=exp.Literal.number(ELEMENT_BYTES))


def _guard(
    value: exp.Expr, size: exp.Expr, cap: int, name: str, reported: int | None = None
) -> exp.Expr:
    """``CASE WHEN size > cap THEN error(...) ELSE value END`` (``size`` alone when
    ``cap`` is 0: a condition already)."""
    message = f"{VALUE_MARKER}:{name}:{reported or cap}"
    too_big = exp.GT(this=_p(size), expression=exp.Literal.number(cap)) if cap else size
    error = exp.Anonymous(this="error", expressions=[exp.Literal.string(message)])
    return exp.Case(ifs=[exp.If(this=too_big, true=error)], default=_p(value))


def _length(value: exp.Expr) -> exp.Expr:
    # length() takes text and lists; a BLOB is measured as its text form
    as_text = exp.Cast(this=_p(value), to=exp.DataType.build("VARCHAR"))
    return exp.Anonymous(this="length", expressions=[as_text])


def _p(value: exp.Expr) -> exp.Expr:
    return exp.Paren(this=value.copy())


def _check_format(node: exp.Func, cap: int) -> None:
    template = node.this if isinstance(node, exp.Format) else (node.expressions or [None])[0]
    if not isinstance(template, exp.Literal) or not template.is_string:
        raise QueryError(
            f"{node.sql_name().lower()}() needs a literal format string here",
            code="query_too_large",
        )
    text = template.this
    specs = re.findall(r"%[-+ #0']*(\d*)(?:\.(\d+))?", text)  # printf: width and precision
    specs += [
        (w, "")
        for spec in re.findall(r"\{[^{}]*?:([^{}]*)\}", text)
        for w in re.findall(r"\d+", spec)
    ]
    widths = [int(w) for pair in specs for w in pair if w]
    if widths and max(widths) > cap:
        raise QueryError(
            f"a width in the format string is over {cap:,} (setting query_max_value_bytes)",
            code="query_too_large",
        )


def value_too_large(message: str, limits: QueryLimits) -> QueryError | None:
    """The ``query_too_large`` error for a DuckDB error raised by a ``bound_values`` guard."""
    found = re.search(VALUE_MARKER + r":(\w+):(\d+)", message)
    if found is None:
        return None
    return QueryError(
        f"{found.group(1)}() would build one value over {int(found.group(2)):,} bytes "
        "(setting query_max_value_bytes); ask for a smaller size, or generate rows with "
        "FROM range(...) instead of a list",
        code="query_too_large",
        function=found.group(1),
    )
