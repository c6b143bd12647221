"""What the materializer copies: each stream's topics into its tables.

A stream feeds three topics into the store: its rows into the stream's table (replayed
rows also mark their quarantine rows, in the same commit), its rejected rows into the
quarantine table, and quarantine state changes into that table in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from headwater.ingest.quarantine import mark_replayed, new_quarantined, update_in_place
from headwater.ingest.streams import (
    QUARANTINE_STORED_SCHEMA,
    QUARANTINE_UPDATES_SCHEMA,
    StreamState,
    quarantine_table_of,
    store_schema,
)
from headwater.store.materializer import Feed


def stream_feeds(streams: Iterable[StreamState]) -> Iterator[Feed]:
    for st in streams:
        quarantine = quarantine_table_of(st.schema.name)
        yield Feed(
            st.tenant, st.topic, st.schema.name, _schema_of(st), mark_replayed(quarantine),
            st.schema.subject,
        )  # fmt: skip
        yield Feed(
            st.tenant,
            st.quarantine_topic,
            quarantine,
            lambda: QUARANTINE_STORED_SCHEMA,
            new_quarantined,
        )
        yield Feed(
            st.tenant,
            st.quarantine_updates_topic,
            quarantine,
            lambda: QUARANTINE_UPDATES_SCHEMA,
            update_in_place(quarantine),
        )


def _schema_of(st: StreamState) -> Callable[[], pa.Schema]:
    """The stream's store schema as it is when asked (a schema can evolve live)."""
    return lambda: store_schema(st.schema)
