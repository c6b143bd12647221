"""What a read of rows asks for: the time-range query of a table, and its answer's marks.

The store's ports take these; the query layer plans pages and runs SQL with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

Order = Literal["asc", "desc"]

TRUNCATED_KEY = b"truncated"
"""Schema metadata key set to ``b"true"`` on a ``sql`` answer cut at ``max_rows``."""

TIMESTAMP = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True, slots=True)
class RowQuery:
    """A time-range read of a table (stream rows, results, quarantine).

    ``time_column`` is the event-time column (or window_start), a timestamp or an
    integer epoch-ms column; bounds are epoch ms, ``from_ms`` inclusive and ``to_ms``
    exclusive. ``filters`` are equality filters column -> value (None matches NULL;
    values are cast to the column's type). ``cursor`` is opaque, produced by the
    previous page of the same query; ``count_rows`` ignores order, limit and cursor.
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
