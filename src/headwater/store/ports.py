"""The ``ResultStore`` port: tables of stream rows, quarantined rows and pipeline output.

Tables are named per tenant. A *stream table* holds a stream's validated rows plus
system columns; a *result table* holds a pipeline's output, upserted by a key;
every write records the consumer's log offsets in the same transaction, so a restart
resumes exactly where the last committed write ended (no loss, no double count).

System columns of stream tables (all adapters):
    _offset BIGINT     log offset of the row (unique per stream)
    _received_ms BIGINT receive time, epoch ms
    _schema_version INT schema version the row was validated against
    _id_hash UBIGINT    64-bit hash of the event id (NULL when the stream has no id field)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa

Order = Literal["asc", "desc"]


@dataclass(frozen=True, slots=True)
class RowQuery:
    """A time-range read of a table (stream rows, results, quarantine).

    ``time_column`` is the event-time column (or window_start); bounds are epoch ms,
    ``from_ms`` inclusive and ``to_ms`` exclusive. ``filters`` are equality filters
    column -> value. ``cursor`` is opaque, produced by the previous page.
    """

    tenant: str
    table: str
    time_column: str | None = None
    from_ms: int | None = None
    to_ms: int | None = None
    filters: dict[str, Any] = field(default_factory=dict)
    order: Order = "asc"
    limit: int = 1000
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class RowPage:
    rows: pa.Table
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """One atomic commit of a consumer (the stream materializer or a pipeline).

    - ``appends``: table name -> rows to append.
    - ``upserts``: table name -> (rows, key columns); rows replace rows with equal keys.
    - ``offsets``: log topic -> next offset to read; stored under ``consumer``.
    - ``state``: opaque snapshot of the consumer's state (e.g. Arrow IPC bytes), or None
      to leave it unchanged.
    """

    consumer: str
    offsets: dict[str, int]
    appends: dict[str, pa.Table] = field(default_factory=dict)
    upserts: dict[str, tuple[pa.Table, list[str]]] = field(default_factory=dict)
    state: bytes | None = None


class ResultStore(Protocol):
    def ensure_table(self, tenant: str, table: str, schema: pa.Schema, key: list[str] | None = None) -> None:
        """Create the table if missing; add columns the schema gained (widening types)."""
        ...

    def drop_table(self, tenant: str, table: str) -> None: ...

    def table_schema(self, tenant: str, table: str) -> pa.Schema | None: ...

    def commit(self, tenant: str, write: ResultWrite) -> None:
        """Apply every part of ``write`` in one transaction, or none of it."""
        ...

    def consumer_offsets(self, tenant: str, consumer: str) -> dict[str, int]: ...

    def consumer_state(self, tenant: str, consumer: str) -> bytes | None: ...

    def read_rows(self, query: RowQuery) -> RowPage: ...

    def count_rows(self, query: RowQuery) -> int: ...

    def latest_per_key(self, tenant: str, table: str, key: list[str], time_column: str, n: int) -> pa.Table: ...

    def id_hashes(self, tenant: str, table: str, since_ms: int | None) -> pa.Array:
        """Every stored ``_id_hash`` of a stream table (rows with event time >= since_ms)."""
        ...

    def sql(self, tenant: str, query: str, *, max_rows: int, timeout_s: float) -> pa.Table:
        """Run a read-only SELECT that can see only ``tenant``'s tables, by their names."""
        ...

    def close(self) -> None: ...
