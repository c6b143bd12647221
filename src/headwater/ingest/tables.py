"""The tables a tenant has: what its streams, pipelines, reference tables and sinks occupy."""

from __future__ import annotations

from headwater.catalog.sqlite import Catalog
from headwater.ingest.streams import StreamDirectory
from headwater.model.names import tables_of


class TableNames:
    def __init__(self, catalog: Catalog, streams: StreamDirectory) -> None:
        self._catalog, self._streams = catalog, streams

    def occupied(self, tenant: str) -> set[str]:
        """Every store table the tenant's streams, pipelines and reference tables occupy."""
        out: set[str] = set()
        for s in self._streams.in_tenant(tenant):
            out |= set(tables_of("stream", s.schema.name))
        for p in self._catalog.pipelines(tenant):
            out |= set(tables_of("pipeline", p.name))
        for name in self._catalog.reference_tables(tenant):
            out |= set(tables_of("reference", name))
        return out

    def readable(self, tenant: str) -> set[str]:
        """The tables a tenant reads by name: streams, pipeline outputs, references, DLQs."""
        names = {s.schema.name for s in self._streams.in_tenant(tenant)}
        for p in self._catalog.pipelines(tenant):
            names |= {p.name, f"{p.name}_late", f"{p.name}_errors"}
        names |= set(self._catalog.reference_tables(tenant))
        names |= {f"{s.name}_dlq" for s in self._catalog.sinks(tenant)}
        names |= {f"{a['name']}_dlq" for a, _ in self._catalog.alerts() if a["tenant"] == tenant}
        return names
