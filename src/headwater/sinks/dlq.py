"""The dead-letter table ``<sink>_dlq``: rows a sink could not deliver, keyed by row key.

Upserts by the row's idempotency key make a dead letter written twice (a replay after
a crash) one row. ``state`` is ``dead``, ``replaying`` (a replay is delivering it; a
restart finishes the replay) or ``replayed`` (delivered by a replay: never again).
"""

from __future__ import annotations

import pyarrow as pa

from headwater.sinks.http import Outcome
from headwater.sinks.rows import Row

DLQ_KEY = ["key"]
DLQ_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("offset", pa.int64()),
        pa.field("row", pa.string()),
        pa.field("attempts", pa.int32()),
        pa.field("last_status", pa.int32()),
        pa.field("last_body", pa.string()),
        pa.field("error", pa.string()),
        pa.field("first_failure", pa.timestamp("ms", tz="UTC")),
        pa.field("last_failure", pa.timestamp("ms", tz="UTC")),
        pa.field("state", pa.string()),
    ]
)


def dlq_table(sink: str) -> str:
    return f"{sink}_dlq"


def dead_letters(rows: list[Row], out: Outcome, state: str = "dead") -> list[dict[str, object]]:
    return [
        {
            "key": r.key, "offset": r.offset, "row": r.json.decode(), "attempts": out.attempts,
            "last_status": out.status, "last_body": out.body, "error": out.error,
            "first_failure": out.first_failure_ms, "last_failure": out.last_failure_ms,
            "state": state,
        }
        for r in rows
    ]  # fmt: skip


def to_table(letters: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(letters, schema=DLQ_SCHEMA)
