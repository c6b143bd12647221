"""What a tenant's SQL sees of the catalog: its own tables, by name, and nothing else.

``SHOW TABLES`` and ``information_schema.tables`` are answered from the tenant's table
names as literal rows (DuckDB's own catalog views would list the store's bookkeeping
schema too), and a query naming a table the tenant does not have is told which it has.

>>> show_tables(exp.Show(this="TABLES"), ["b", "a"]).sql(dialect="duckdb")
"SELECT name FROM (VALUES ('a'), ('b')) AS _tables(name) ORDER BY name NULLS FIRST"
"""

from __future__ import annotations

from sqlglot import exp

from headwater.errors import QueryError

LISTED = 50  # most table names an error message lists


def show_tables(show: exp.Show, names: list[str]) -> exp.Query:
    """``SHOW TABLES`` (or ``SHOW ALL TABLES``) as a SELECT of the tenant's table names."""
    what = str(show.this).upper()
    if what not in ("TABLES", "ALL TABLES"):
        raise QueryError(
            f"SHOW {what} is not supported; SHOW TABLES lists this tenant's tables",
            code="read_only",
        )
    return exp.select("name").from_(_names(names, "name")).order_by("name")


def information_schema_tables(names: list[str], alias: str) -> exp.Subquery:
    """``information_schema.tables`` restricted to the tenant's tables (schema ``main``)."""
    listing = (
        exp.select(
            exp.Literal.string("main").as_("table_schema"),
            exp.column("table_name"),
            exp.Literal.string("BASE TABLE").as_("table_type"),
        )
        .from_(_names(names, "table_name"))
        .subquery(alias)
    )
    return listing


def _names(names: list[str], column: str) -> exp.Expr:
    if not names:  # VALUES needs a row: an empty listing is one NULL row filtered out
        return (
            exp.select(exp.cast(exp.null(), "VARCHAR").as_(column))
            .where("false")
            .subquery("_tables")
        )
    return exp.values([(n,) for n in sorted(names)], alias="_tables", columns=[column])


def unknown_table(name: str, names: list[str]) -> QueryError:
    """The error for a table the tenant does not have, listing the ones it has."""
    if not names:
        hint = "this tenant has no tables yet; create a stream with POST /v1/streams"
    else:
        shown = ", ".join(sorted(names)[:LISTED])
        more = f" and {len(names) - LISTED} more (SHOW TABLES)" if len(names) > LISTED else ""
        hint = f"this tenant's tables: {shown}{more}"
    return QueryError(f"table {name!r} does not exist; {hint}", code="unknown_table", table=name)
