"""Which answer columns a query shows: internal ``_`` columns only when it names them.

Stream tables carry system columns (``_offset``, ``_received_ms``, ``_schema_version``,
``_id_hash``) that a ``SELECT *`` would otherwise spread over every answer. An answer
column whose name starts with ``_`` is kept only when the query names it: as a column
(``SELECT _offset, *``, ``WHERE _received_ms > …``) or as an alias (``AS _n``).

>>> import pyarrow as pa
>>> t = pa.table({"device_id": ["d1"], "_offset": [0], "_id_hash": [7]})
>>> shown, dropped = visible(t, "SELECT * FROM readings")
>>> shown.column_names, dropped
(['device_id'], ['_offset', '_id_hash'])
>>> visible(t, "SELECT *, _offset FROM readings")[0].column_names
['device_id', '_offset']
"""

from __future__ import annotations

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError


def named(query: str) -> set[str]:
    """Lower-cased names the query writes as columns or aliases (empty if it does not parse)."""
    try:
        tree = sqlglot.parse_one(query, read="duckdb")
    except SqlglotError:
        return set()
    names = {c.name.lower() for c in tree.find_all(exp.Column) if c.name}
    names |= {a.alias.lower() for a in tree.find_all(exp.Alias) if a.alias}
    return names


def hidden(table: pa.Table, query: str) -> list[str]:
    """The internal columns of ``table`` that ``query`` did not name."""
    asked = named(query)
    return [n for n in table.column_names if n.startswith("_") and n.lower() not in asked]


def visible(table: pa.Table, query: str) -> tuple[pa.Table, list[str]]:
    """``table`` without the internal columns ``query`` did not name, and their names."""
    dropped = hidden(table, query)
    if not dropped:
        return table, []
    drop = set(dropped)
    keep = [i for i, n in enumerate(table.column_names) if n not in drop]
    schema = pa.schema([table.schema.field(i) for i in keep], metadata=table.schema.metadata)
    return pa.Table.from_arrays([table.column(i) for i in keep], schema=schema), dropped
