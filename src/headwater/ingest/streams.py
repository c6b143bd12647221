"""The stream directory: current schema, schema history and dedup index of each stream.

Creating or changing a stream goes through here: the schema is checked, the change is
checked for compatibility, the catalog records the new version and the store table
gains the new columns — before any row of the new version is accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from headwater.catalog.sqlite import Catalog
from headwater.errors import Conflict, NotFound
from headwater.ingest.dedup import IdIndex
from headwater.ingest.plan import arrow_schema_of, per_schema
from headwater.ingest.quarantine import QUARANTINED, REPLAY_OF, STATE_FIELDS, UPDATE_FIELDS
from headwater.ingest.rules import compile_rules
from headwater.model.names import QUARANTINE_PREFIX, check_free
from headwater.model.schema import StreamSchema, check_evolution, check_schema
from headwater.store.ports import ResultStore, ResultWrite

SYSTEM_FIELDS = [
    pa.field("_received_ms", pa.int64()),
    pa.field("_schema_version", pa.int32()),
    pa.field("_id_hash", pa.uint64()),
]
STORED_SYSTEM_FIELDS = [pa.field("_offset", pa.int64()), *SYSTEM_FIELDS]

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("row", pa.int32()),
        pa.field("field", pa.string()),
        pa.field("code", pa.string()),
        pa.field("message", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("format", pa.string()),
        pa.field("schema_version", pa.int32()),
        pa.field("received_ms", pa.int64()),
        pa.field("request_id", pa.string()),
    ]
)

QUARANTINE_STORED_SCHEMA = pa.schema(
    [*QUARANTINE_SCHEMA, pa.field("_offset", pa.int64()), *STATE_FIELDS]
)
# What the quarantine updates topic's entries hold (see ``quarantine``).
QUARANTINE_UPDATES_SCHEMA = pa.schema(
    [REPLAY_OF, *(f for f in QUARANTINE_STORED_SCHEMA if f.name in UPDATE_FIELDS)]
)


def topic_of(tenant: str, stream: str) -> str:
    return f"{tenant}.{stream}"


def quarantine_topic_of(tenant: str, stream: str) -> str:
    return f"{tenant}.{stream}.quarantine"


def quarantine_table_of(stream: str) -> str:
    return QUARANTINE_PREFIX + stream


@per_schema
def log_schema(schema: StreamSchema) -> pa.Schema:
    """Columns of a stream's log entries: the user fields, then system fields."""
    return pa.schema([*arrow_schema_of(schema), *SYSTEM_FIELDS])


@per_schema
def store_schema(schema: StreamSchema) -> pa.Schema:
    """Columns of a stream's store table."""
    return pa.schema([*arrow_schema_of(schema), *STORED_SYSTEM_FIELDS])


@dataclass
class StreamState:
    tenant: str
    schema: StreamSchema
    versions: list[StreamSchema]
    ids: IdIndex = field(default_factory=IdIndex)

    @property
    def topic(self) -> str:
        return topic_of(self.tenant, self.schema.name)

    @property
    def quarantine_topic(self) -> str:
        return quarantine_topic_of(self.tenant, self.schema.name)

    @property
    def quarantine_updates_topic(self) -> str:
        """Changes of quarantined rows made by replays (``headwater.ingest.quarantine``)."""
        return f"{self.tenant}.{self.schema.name}.quarantine_updates"

    @property
    def idempotency_topic(self) -> str:
        """Answers of requests that stored no row (all duplicates) are kept here."""
        return f"{self.tenant}.{self.schema.name}.idempotency"


IdIndexFactory = Callable[[str, StreamSchema], IdIndex]


def in_memory_ids(tenant: str, schema: StreamSchema) -> IdIndex:
    return IdIndex()


class StreamDirectory:
    def __init__(
        self, catalog: Catalog, store: ResultStore, id_index: IdIndexFactory = in_memory_ids
    ) -> None:
        self._catalog = catalog
        self._store = store
        self._id_index = id_index
        self._streams: dict[tuple[str, str], StreamState] = {}
        for tenant, schema in catalog.all_streams():
            versions = catalog.stream_versions(tenant, schema.name)
            self._streams[(tenant, schema.name)] = StreamState(
                tenant, schema, versions, id_index(tenant, schema)
            )
            # A store lost with its data dir's other parts intact is rebuilt from the log.
            store.ensure_table(tenant, schema.name, store_schema(schema))
            _upgrade_quarantine(store, tenant, schema.name)

    def get(self, tenant: str, name: str) -> StreamState:
        st = self._streams.get((tenant, name))
        if st is None:
            raise NotFound(
                f"stream {name!r} does not exist; create it with POST /v1/streams",
                code="unknown_stream",
            )
        return st

    def in_tenant(self, tenant: str) -> list[StreamState]:
        return [s for (t, _), s in sorted(self._streams.items()) if t == tenant]

    def all(self) -> list[StreamState]:
        return list(self._streams.values())

    def create(
        self, tenant: str, schema: StreamSchema, now_ms: int, taken: set[str]
    ) -> StreamState:
        """Create a new stream; ``taken`` holds the tables the tenant's objects occupy."""
        check_schema(schema)
        compile_rules(schema)
        if (tenant, schema.name) in self._streams:
            raise Conflict(
                f"{schema.name!r} already exists; use PUT /v1/streams/{schema.name} to change its schema",
                code="stream_exists",
            )
        check_free("stream", schema.name, taken)
        schema = _with_version(schema, 1)
        self._store.ensure_table(tenant, schema.name, store_schema(schema))
        self._store.ensure_table(tenant, quarantine_table_of(schema.name), QUARANTINE_STORED_SCHEMA)
        self._catalog.add_stream_version(tenant, schema, now_ms)
        st = StreamState(tenant, schema, [schema], self._id_index(tenant, schema))
        self._streams[(tenant, schema.name)] = st
        return st

    def evolve(
        self, tenant: str, schema: StreamSchema, now_ms: int
    ) -> tuple[StreamState, list[str]]:
        """Apply a compatible schema change live; refuse an incompatible one with reasons."""
        st = self.get(tenant, schema.name)
        check_schema(schema)
        compile_rules(schema)
        changes = check_evolution(st.schema, schema)
        if not changes and _with_version(schema, st.schema.version) == st.schema:
            return st, []
        new = _with_version(schema, st.schema.version + 1)
        self._store.ensure_table(tenant, new.name, store_schema(new))
        self._catalog.add_stream_version(tenant, new, now_ms)
        if st.schema.id is None and new.id is not None:
            st.ids = self._id_index(tenant, new)
        st.schema = new
        st.versions.append(new)
        return st, changes or ["constraints changed"]


def _upgrade_quarantine(store: ResultStore, tenant: str, stream: str) -> None:
    """Give a quarantine table made before rows had a state its state columns; its rows
    are all ``quarantined`` (nothing could be replayed in place then)."""
    table = quarantine_table_of(stream)
    before = store.table_schema(tenant, table)
    store.ensure_table(tenant, table, QUARANTINE_STORED_SCHEMA)
    if before is None or "state" in before.names:
        return
    offsets = store.sql(
        tenant, f"SELECT _offset FROM {table} WHERE state IS NULL", max_rows=1 << 40, timeout_s=600
    ).column(0)
    rows = pa.table({
        "_offset": offsets,
        "state": pa.repeat(pa.scalar(QUARANTINED), len(offsets)),
        "replay_attempts": pa.repeat(pa.scalar(0, pa.int32()), len(offsets)),
    })  # fmt: skip
    store.commit(tenant, ResultWrite("upgrade", {}, updates={table: (rows, ["_offset"])}))


def _with_version(schema: StreamSchema, version: int) -> StreamSchema:
    import msgspec

    return msgspec.structs.replace(schema, version=version)
