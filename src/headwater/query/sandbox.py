"""The read-only SQL sandbox: one SELECT over one tenant's tables, nothing else.

It is the second wall: user SQL already runs on the tenant's own DuckDB database, where
no other tenant's table exists (``store/duckdb.py``). User SQL is parsed (sqlglot,
DuckDB dialect), checked and rewritten before it runs; what runs is the rewritten
tree, never the user's text:

- exactly one statement, a query (SELECT, set operations, CTEs, joins, subqueries,
  aggregates, window functions); anything else is refused with ``read_only``.
  ``SHOW TABLES`` and ``information_schema.tables`` answer the tenant's tables;
- every table reference must name a CTE in scope or one of the tenant's tables
  (``unknown_table`` otherwise, listing the tenant's tables). Names compare as DuckDB
  compares them (ASCII letters ignore case, nothing else does), and every reference is
  rewritten so that DuckDB cannot bind it any other way: a CTE gets a new name no table
  can have, a table is qualified by its schema (a CTE never shadows ``main.x``). A
  schema-qualified name is never resolved; a table or CTE name with characters that
  look like other ones after Unicode normalisation is refused (``ambiguous_name``);
- a function in FROM is refused unless it only generates rows (``range``,
  ``generate_series``, ``unnest``), and functions that read files, settings, the
  environment or the catalog are refused anywhere (``forbidden_function``).

>>> rewrite_select("SELECT count(*) FROM readings", {"readings": "readings"}, schema="main").sql
'SELECT COUNT(*) FROM main."readings" AS readings'
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from headwater.errors import QueryError
from headwater.query.listing import information_schema_tables, show_tables, unknown_table

CTE_PREFIX = "_cte#"  # no table name has a '#': a renamed CTE cannot be a table
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
    """A checked query: ``sql`` reads only ``tables`` (logical name -> physical name).

    ``names`` maps the names ``sql`` uses back to the user's (for error messages).
    """

    sql: str
    tables: dict[str, str]
    names: dict[str, str]


def rewrite_select(
    query: str,
    tables: Mapping[str, str],
    *,
    schema: str | None = None,
    transform: Callable[[exp.Expr], exp.Expr] | None = None,
) -> SandboxedSelect:
    """Check ``query`` and point its table references at the tenant's physical tables.

    ``tables`` maps the tenant's table names to physical ones, which live in ``schema``;
    ``transform`` (e.g. ``query.limits.bound_values``) rewrites the checked tree last.
    """
    tree = _parse_one(query)
    listing = sorted(tables)
    if isinstance(tree, exp.Show):
        tree = show_tables(tree, listing)
    _check_statements(tree)
    _check_functions(tree)
    scope = _Scope({fold(k): (k, v) for k, v in tables.items()}, listing, schema)
    scope.rewrite(tree, {})
    if transform is not None:
        tree = transform(tree)
    names = {**scope.cte_names, **{p: logical for logical, p in scope.used.items()}}
    return SandboxedSelect(tree.sql(dialect="duckdb"), scope.used, names)


def fold(name: str) -> str:
    """A name as DuckDB compares it: ASCII letters lower-cased, every other character kept.

    >>> fold("Readings"), fold("t_ban\u212a")  # KELVIN SIGN is not an ASCII K
    ('readings', 't_ban\u212a')
    """
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


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
            and func.arg_key == "this"  # what is read, not a JOIN's ON condition
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


class _Scope:
    """Rewrites the table references of one query; collects what they read."""

    def __init__(
        self, tables: dict[str, tuple[str, str]], listing: list[str], schema: str | None
    ) -> None:
        self.tables = tables  # folded name -> (name, physical)
        self.listing = listing
        self.schema = schema
        self.used: dict[str, str] = {}
        self.cte_names: dict[str, str] = {}  # new CTE name -> the user's

    def rewrite(self, node: exp.Expr, ctes: dict[str, str]) -> None:
        """Rewrite references below ``node``; ``ctes`` maps folded CTE names in scope to new ones.

        Scoping follows DuckDB: a CTE is visible in its query's body, in the CTEs after
        it, and in the recursive term of its own UNION when the WITH is recursive. A name
        outside that scope is a table.
        """
        with_ = node.args.get("with_") if isinstance(node, exp.Query) else None
        if isinstance(with_, exp.With):
            for cte in with_.expressions:
                name = cte.alias_or_name
                inner = {**ctes, fold(name): self._rename_cte(cte)}
                body = cte.this
                if with_.args.get("recursive") and isinstance(body, exp.Union):
                    # DuckDB binds the CTE's own name in the recursive term (the
                    # right side of the top UNION) only; in the anchor it is a table.
                    self.rewrite_part(body, "this", ctes)
                    self.rewrite_part(body, "expression", inner)
                    self._rewrite_modifiers(body, ctes)
                else:
                    self.rewrite(body, ctes)
                ctes = inner
        for child in list(node.iter_expressions()):
            if child is with_:
                continue
            if isinstance(child, exp.Table):
                self._rewrite_table(child, ctes)
            self.rewrite(child, ctes)

    def rewrite_part(self, node: exp.Expr, arg: str, ctes: dict[str, str]) -> None:
        part = node.args.get(arg)
        if isinstance(part, exp.Table):
            self._rewrite_table(part, ctes)
        if isinstance(part, exp.Expr):
            self.rewrite(part, ctes)

    def _rewrite_modifiers(self, union: exp.Union, ctes: dict[str, str]) -> None:
        """ORDER BY, LIMIT and the like of the UNION itself: outside the recursion."""
        for arg, value in union.args.items():
            if arg not in ("this", "expression") and isinstance(value, exp.Expr):
                self.rewrite_part(union, arg, ctes)

    def _rename_cte(self, cte: exp.CTE) -> str:
        name = cte.alias_or_name
        _check_spelling(name)
        new = f"{CTE_PREFIX}{len(self.cte_names) + 1}"
        self.cte_names[new] = name
        alias = cte.args.get("alias")
        if isinstance(alias, exp.TableAlias):
            alias.set("this", exp.to_identifier(new, quoted=True))
        return new

    def _rewrite_table(self, table: exp.Table, ctes: dict[str, str]) -> None:
        target = table.this
        if not isinstance(target, exp.Identifier):
            name = (
                function_name(target)
                if isinstance(target, exp.Func)
                else target.sql(dialect="duckdb")
            )
            if name not in ROW_GENERATORS:
                _refuse_table_function(name)
            return
        if table.args.get("db") is not None or table.args.get("catalog") is not None:
            self._qualified(table)
            return
        name = target.name
        _check_spelling(name)
        alias = table.alias or None
        if fold(name) in ctes:
            table.set("this", exp.to_identifier(ctes[fold(name)], quoted=True))
        else:
            found = self.tables.get(fold(name))
            if found is None:
                raise unknown_table(name, self.listing)
            self.used[found[0]] = found[1]
            table.set("this", exp.to_identifier(found[1], quoted=True))
            if self.schema is not None:
                table.set("db", exp.to_identifier(self.schema))
        if alias is None:
            # Keep the user's name as the alias so qualified columns (readings.ts) still bind.
            table.set("alias", exp.TableAlias(this=exp.to_identifier(name, quoted=target.quoted)))

    def _qualified(self, table: exp.Table) -> None:
        """``information_schema.tables`` lists the tenant's tables; other qualified names are unknown."""
        catalog, db = table.args.get("catalog"), table.args.get("db")
        if (
            catalog is None
            and db is not None
            and fold(db.name) == "information_schema"
            and fold(table.name) == "tables"
        ):
            table.replace(information_schema_tables(self.listing, table.alias or "tables"))
            return
        full = table.sql(dialect="duckdb").split(" ")[0]
        raise QueryError(
            f"table {full} does not exist; use a table name without a schema "
            f"({_tables_hint(self.listing)})",
            code="unknown_table",
            table=full,
        )


def _check_spelling(name: str) -> None:
    """Refuse a name whose look-alike characters DuckDB would not fold (e.g. U+212A, a 'K')."""
    if name.isascii():
        return
    if unicodedata.normalize("NFKC", name).casefold() != fold(name):
        raise QueryError(
            f"the name {name!r} holds characters that read as other letters after Unicode "
            "normalisation or case folding; spell table and CTE names in lower-case ASCII",
            code="ambiguous_name",
            name=name,
        )


def _tables_hint(listing: list[str]) -> str:
    return "see SHOW TABLES" if listing else "this tenant has no tables yet"
