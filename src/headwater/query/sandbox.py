"""The read-only SQL sandbox: one SELECT over one tenant's tables, nothing else.

User SQL is parsed (sqlglot, DuckDB dialect), checked and rewritten before it runs;
what runs is the rewritten tree, never the user's text:

- exactly one statement, a query (SELECT, set operations, CTEs, joins, subqueries,
  aggregates, window functions); anything else is refused with ``read_only``;
- every table reference must name a CTE in scope or one of the tenant's tables and
  is rewritten to the tenant's physical table (``unknown_table`` otherwise — a
  schema-qualified name is never resolved, so no other tenant's table is reachable);
- a function in FROM is refused unless it only generates rows (``range``,
  ``generate_series``, ``unnest``), and functions that read files, settings, the
  environment or the catalog are refused anywhere (``forbidden_function``).

>>> rewrite_select("SELECT count(*) FROM readings", {"readings": "t_a__readings"}.get).sql
'SELECT COUNT(*) FROM "t_a__readings" AS readings'
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from headwater.errors import QueryError

Resolve = Callable[[str], str | None]
"""Logical table name (lower-cased) -> physical table name, or None if the tenant has none."""

ROW_GENERATORS = frozenset({"range", "generate_series", "unnest"})
FORBIDDEN_PREFIXES = (
    "read_", "duckdb_", "pragma_", "parquet_", "sqlite_", "postgres_", "mysql_", "iceberg_",
    "delta_", "arrow_", "python_", "icu_", "json_execute", "load_", "enable_", "disable_",
)  # fmt: skip
FORBIDDEN_NAMES = frozenset(
    {
        "glob", "getenv", "current_setting", "getvariable", "set_variable", "query", "query_table",
        "sniff_csv", "nextval", "currval", "setseed", "checkpoint", "force_checkpoint", "which_secret",
        "seq_scan", "index_scan", "sql_auto_complete", "summary", "current_database", "current_schema",
        "current_schemas", "current_catalog", "has_table_privilege", "has_schema_privilege",
    }
)  # fmt: skip
QUERY_ROOTS = (exp.Select, exp.SetOperation, exp.Subquery)
# Statement kinds that may not appear anywhere in the tree (e.g. inside a CTE).
STATEMENTS = tuple(
    getattr(exp, name)
    for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command", "Pragma", "Set",
        "Copy", "Attach", "Detach", "Install", "Use", "Transaction", "Commit", "Rollback",
        "Describe", "Summarize", "Export", "Analyze", "Grant", "Revoke", "TruncateTable", "LoadData",
    )
    if hasattr(exp, name)
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SandboxedSelect:
    """A checked query: ``sql`` reads only ``tables`` (logical name -> physical name)."""

    sql: str
    tables: dict[str, str]


def rewrite_select(
    query: str, resolve: Resolve, transform: Callable[[exp.Expr], exp.Expr] | None = None
) -> SandboxedSelect:
    """Check ``query`` and point its table references at the tenant's physical tables.

    ``transform`` (e.g. ``query.limits.bound_values``) rewrites the checked tree last.
    """
    tree = _parse_one(query)
    _check_statements(tree)
    _check_functions(tree)
    used: dict[str, str] = {}
    _rewrite_scope(tree, frozenset(), resolve, used)
    if transform is not None:
        tree = transform(tree)
    return SandboxedSelect(tree.sql(dialect="duckdb"), used)


def _parse_one(query: str) -> exp.Expr:
    try:
        statements = [s for s in sqlglot.parse(query, read="duckdb") if s is not None]
    except (ParseError, TokenError) as exc:
        raise QueryError(
            f"the query could not be parsed: {_parse_message(exc)}", code="syntax_error"
        ) from exc
    if len(statements) != 1:
        raise QueryError(
            f"send exactly one SELECT statement (got {len(statements)})", code="read_only"
        )
    return statements[0]


def _parse_message(exc: Exception) -> str:
    if isinstance(exc, ParseError) and exc.errors:
        e = exc.errors[0]
        return f"{e.get('description')} at line {e.get('line')}, column {e.get('col')}"
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc))


def _check_statements(tree: exp.Expr) -> None:
    if not isinstance(tree, QUERY_ROOTS):
        kind = tree.key.upper() if not isinstance(tree, exp.Command) else str(tree.this).upper()
        raise QueryError(f"only SELECT queries are allowed here, not {kind}", code="read_only")
    for node in tree.walk():
        if isinstance(node, STATEMENTS):
            raise QueryError(
                f"only SELECT queries are allowed here, not {node.key.upper()}", code="read_only"
            )
        if isinstance(node, exp.Select) and node.args.get("into") is not None:
            raise QueryError(
                "SELECT ... INTO writes a table; only reading is allowed", code="read_only"
            )


def _check_functions(tree: exp.Expr) -> None:
    for func in tree.find_all(exp.Func):
        name = function_name(func)
        if name in FORBIDDEN_NAMES or name.startswith(FORBIDDEN_PREFIXES):
            raise QueryError(
                f"function {name}() is not allowed in queries (it reaches files, settings or the catalog)",
                code="forbidden_function",
                function=name,
            )
        if (
            isinstance(func.parent, (exp.From, exp.Join, exp.Lateral))
            and name not in ROW_GENERATORS
        ):
            _refuse_table_function(name)


def function_name(func: exp.Func) -> str:
    if isinstance(func, exp.Anonymous):
        return str(func.name).lower()
    return func.sql_name().lower()


def _refuse_table_function(name: str) -> None:
    raise QueryError(
        f"table function {name}() is not allowed; query the tenant's tables by name",
        code="forbidden_function",
        function=name,
    )


def _rewrite_scope(
    node: exp.Expr, ctes: frozenset[str], resolve: Resolve, used: dict[str, str]
) -> None:
    """Rewrite table references below ``node``; ``ctes`` are the CTE names in scope.

    Scoping follows SQL: a CTE is visible in its query's body, in the CTEs after it,
    and in itself when the WITH is recursive. A name outside that scope is a table.
    """
    with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
    if isinstance(with_, exp.With):
        for cte in with_.expressions:
            name = cte.alias_or_name.lower()
            _rewrite_scope(
                cte.this, ctes | {name} if with_.args.get("recursive") else ctes, resolve, used
            )
            ctes = ctes | {name}
    for child in list(node.iter_expressions()):
        if child is with_:
            continue
        if isinstance(child, exp.Table):
            _rewrite_table(child, ctes, resolve, used)
        _rewrite_scope(child, ctes, resolve, used)


def _rewrite_table(
    table: exp.Table, ctes: frozenset[str], resolve: Resolve, used: dict[str, str]
) -> None:
    target = table.this
    if not isinstance(target, exp.Identifier):
        name = (
            function_name(target) if isinstance(target, exp.Func) else target.sql(dialect="duckdb")
        )
        if name not in ROW_GENERATORS:
            _refuse_table_function(name)
        return
    if table.args.get("db") is not None or table.args.get("catalog") is not None:
        full = table.sql(dialect="duckdb").split(" ")[0]
        raise QueryError(
            f"table {full} does not exist; use a table name without a schema",
            code="unknown_table",
            table=full,
        )
    name = target.name
    if name.lower() in ctes:
        return
    physical = resolve(name.lower())
    if physical is None:
        raise QueryError(f"table {name!r} does not exist", code="unknown_table", table=name)
    used[name] = physical
    if not table.alias:
        # Keep the user's name as the alias so qualified columns (readings.ts) still bind.
        table.set("alias", exp.TableAlias(this=exp.to_identifier(name)))
    table.set("this", exp.to_identifier(physical, quoted=True))
