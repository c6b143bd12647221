"""An alert condition: a SQL boolean expression over a row, checked once, evaluated per batch.

The condition is parsed with sqlglot at creation: one expression (no queries), naming
only columns of the table, calling only the functions stream rules may call (their cost
is bounded by the row, see ``headwater.ingest.rules.ALLOWED_FUNCTIONS``), and typed
boolean by DuckDB. Evaluation runs it vectorized in the engine's in-memory DuckDB (no
file or network access) over the new rows, keeping the latest row of each key.
A NULL condition counts as not holding.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import sqlglot
from sqlglot import exp

from headwater.engine.operators.query import connect
from headwater.errors import BadRequest
from headwater.ingest.rules import ALLOWED_FUNCTIONS, FORBIDDEN, MAX_RULE_NODES

KEY_COLUMN = "__key"
HOLDS_COLUMN = "__holds"
MAX_CONDITION_CHARS = 4000


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_alert_condition")


@dataclass(frozen=True, slots=True)
class Condition:
    sql: str  # the condition as DuckDB SQL, columns quoted
    key: str  # the key column
    order: str  # the column that orders a key's rows (newest last)


def compile_condition(text: str, key: str, order: str, schema: pa.Schema) -> Condition:
    """Check ``text`` against the table's ``schema``; raises a 400 naming what to fix."""
    if len(text) > MAX_CONDITION_CHARS:
        raise _bad(f"the condition is longer than {MAX_CONDITION_CHARS} characters")
    try:
        return _compile(text, key, order, schema)
    except RecursionError:  # the parser and printer recurse once per level
        raise _bad("the condition nests too deeply; use fewer parentheses") from None


def _compile(text: str, key: str, order: str, schema: pa.Schema) -> Condition:
    names = {n.lower(): n for n in schema.names}
    if key.lower() not in names:
        raise BadRequest(
            f"key {key!r} is not a column of the table; columns: {', '.join(schema.names)}",
            code="bad_alert_key",
        )
    try:
        tree = sqlglot.parse_one(text, read="duckdb")
    except (sqlglot.errors.SqlglotError, ValueError) as exc:
        raise _bad(f"condition {text!r} is not a SQL expression: {exc}") from None
    nodes = 0
    for node in tree.walk():
        nodes += 1
        if isinstance(node, FORBIDDEN):
            raise _bad(f"condition {text!r}: one expression over the row, no queries")
        if isinstance(node, exp.Column) and node.name.lower() not in names:
            raise _bad(f"condition {text!r} names {node.name!r}, which is not a column")
        if isinstance(node, exp.Func) and not isinstance(node, exp.Connector):
            name = node.name.lower() if isinstance(node, exp.Anonymous) else node.key
            if name not in ALLOWED_FUNCTIONS:
                raise _bad(
                    f"condition {text!r} calls {name}, which a condition may not use; "
                    "see docs/alerts.md for the functions conditions may call"
                )
    if nodes > MAX_RULE_NODES:
        raise _bad(f"condition {text!r} is too large: keep it under {MAX_RULE_NODES} terms")
    tree = tree.transform(
        lambda n: exp.column(names[n.name.lower()], quoted=True) if isinstance(n, exp.Column) else n
    )
    cond = Condition(tree.sql(dialect="duckdb"), names[key.lower()], names[order.lower()])
    kind = _type_of(cond, schema.empty_table())
    if kind not in ("BOOLEAN", '"NULL"', "NULL"):
        raise _bad(f"condition {text!r} is of type {kind}, not a boolean; compare it to a value")
    return cond


def _type_of(cond: Condition, empty: pa.Table) -> str:
    con = connect()
    try:
        con.register("rows_", empty)
        rel = con.sql(f"SELECT ({cond.sql}) AS c FROM rows_")
        return str(rel.types[0])
    except duckdb.Error as exc:
        raise _bad(f"condition does not fit the table's columns: {exc}") from None
    finally:
        con.close()


def latest_per_key(cond: Condition, rows: pa.Table) -> pa.Table:
    """The newest row of each key among ``rows``, with ``__key`` (text) and ``__holds``."""
    con = connect()
    try:
        con.register("rows_", rows)
        q = (
            f'SELECT CAST("{cond.key}" AS VARCHAR) AS {KEY_COLUMN}, '
            f"coalesce(({cond.sql}), false) AS {HOLDS_COLUMN}, * FROM rows_ "
            f'WHERE "{cond.key}" IS NOT NULL QUALIFY row_number() OVER '
            f'(PARTITION BY "{cond.key}" ORDER BY "{cond.order}" DESC) = 1'
        )
        out: pa.Table = con.sql(q).to_arrow_table()
        return out
    finally:
        con.close()
