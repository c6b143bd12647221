"""Reference tables kept in the store, cached in memory until they change."""

from __future__ import annotations

import threading

import pyarrow as pa

from headwater.errors import NotFound
from headwater.store.ports import ResultStore


class StoreReferenceTables:
    """The engine's ``ReferenceTables`` port over one tenant's store tables."""

    def __init__(self, store: ResultStore, tenant: str, names: set[str]) -> None:
        self._store = store
        self._tenant = tenant
        self._names = names
        self._cache: dict[str, pa.Table] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, name: str) -> None:
        with self._lock:
            self._names.add(name)
        self.invalidate(name)

    def invalidate(self, name: str) -> None:
        with self._lock:
            self._cache.pop(name, None)
            self._versions[name] = self._versions.get(name, 0) + 1

    def version(self, name: str) -> int:
        """One more each time the table changes (what a pipeline worker's copy is checked by)."""
        with self._lock:
            return self._versions.get(name, 0)

    def get(self, name: str) -> pa.Table:
        with self._lock:
            hit = self._cache.get(name)
            version = self._versions.get(name, 0)
        if hit is not None:
            return hit
        if name not in self._names:
            raise NotFound(
                f"reference table {name!r} does not exist; create it with POST /v1/tables"
            )
        table = self._store.sql(
            self._tenant, f'SELECT * FROM "{name}"', max_rows=10_000_000, timeout_s=60
        )
        table = table.replace_schema_metadata(None)
        with self._lock:
            # An update that came in while this read ran must not be hidden by caching it.
            if self._versions.get(name, 0) == version:
                self._cache[name] = table
        return table
