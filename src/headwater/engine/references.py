"""The ``ReferenceTables`` port: the tables a pipeline joins to enrich its stream.

A pipeline asks for each table on every batch, so an update made while it runs is
seen from the next batch on. ``InMemoryReferenceTables`` is the adapter for tests and
for tables held in memory; the store provides another.

>>> tables = InMemoryReferenceTables({"devices": pa.table({"device_id": ["a"], "site": ["x"]})})
>>> tables.get("devices").num_rows
1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import pyarrow as pa

from headwater.errors import NotFound


class ReferenceTables(Protocol):
    def get(self, name: str) -> pa.Table:
        """The current rows of table ``name``; ``NotFound`` if there is none."""
        ...


class InMemoryReferenceTables:
    def __init__(self, tables: Mapping[str, pa.Table] | None = None) -> None:
        self._tables = dict(tables or {})

    def put(self, name: str, table: pa.Table) -> None:
        self._tables[name] = table

    def get(self, name: str) -> pa.Table:
        try:
            return self._tables[name]
        except KeyError:
            raise NotFound(f"reference table {name!r} does not exist; create it first") from None
