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
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from sqlglot import exp

from headwater.errors import QueryError
from headwater.query.values import bound_values

if TYPE_CHECKING:
    from headwater.settings import Settings

T = TypeVar("T")

LIMIT_CODES = frozenset(
    {"query_timeout", "query_out_of_memory", "answer_too_large", "query_too_large",
     "sql_too_long", "sql_too_deep", "too_many_queries"}
)  # fmt: skip
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
    def from_settings(cls, settings: Settings) -> QueryLimits:
        return cls(
            timeout_s=settings.query_timeout_s,
            memory_bytes=_size(settings, "query_memory_limit"),
            max_answer_bytes=_size(settings, "query_max_answer_bytes"),
            max_value_bytes=_size(settings, "query_max_value_bytes"),
            max_sql_chars=settings.query_max_sql_chars,
            max_sql_depth=settings.query_max_sql_depth,
        )


def _size(settings: Settings, name: str) -> int:
    try:
        return parse_bytes(getattr(settings, name))
    except ValueError as exc:
        raise ValueError(f"setting {name}: {exc}") from None


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
            f"the SQL is {len(sql):,} characters long; the limit is {limits.max_sql_chars:,} "
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
            f"the SQL has {tokens:,} tokens; the limit is {limits.max_sql_tokens:,}: "
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
        f"the SQL {what} (setting query_max_sql_depth): "
        "split it into CTEs or put long value lists in a table",
        code="sql_too_deep",
    )


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
        """The rewrite every query gets before it runs (``values.bound_values``)."""
        return bound_values(tree, self.limits.max_value_bytes)

    def parse(self, sql: str, parse: Callable[[str], T]) -> T:
        """``parse(sql)`` after the text checks, within the deadline.

        The parse runs in a thread of its own (no shared queue to wait in) so the answer
        never waits past the deadline; a parse left behind is bounded by the text checks
        and finishes on its own.
        """
        check_sql_text(sql, self.limits)
        future: Future[T] = Future()

        def work() -> None:
            try:
                future.set_result(without_recursion_error(lambda: parse(sql)))
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)

        threading.Thread(target=work, name="hw-sql-parse", daemon=True).start()
        try:
            return future.result(timeout=max(self.remaining(), 0.0))
        except FutureTimeout:
            raise self.timeout_error() from None
