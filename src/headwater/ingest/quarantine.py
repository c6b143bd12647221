"""A quarantined row's life, and how its changes reach the store exactly once.

A rejected row enters the quarantine table in state ``quarantined``. A replay decides
each selected row's fate, and the fate travels in the durable log, never straight to
the store:

- the row passes: it is appended to the stream's topic, and that same log entry's
  ``meta`` is a ``ReplayMarker`` naming the quarantine row of each of its rows. The
  materializer stores the entry's rows and marks those quarantine rows ``replayed``
  (with the offset each was stored at) in one store transaction;
- the row fails again, or its event id is already stored: an *update entry* on the
  stream's quarantine updates topic (``replay_of`` names the row) carries its new
  reason, or state ``duplicate``; the materializer updates the row in place. (The
  quarantine topic itself only ever holds rejected rows: its end offset counts them.)

So a crash at any instant leaves either no trace of a replay, or a durable entry whose
state change the store applies with its rows, exactly once (the change and the
consumer offset commit together, and applying an update twice gives the same row).
Every update carries absolute values (the new attempt count, not "+1").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import pyarrow as pa

from headwater.log.ports import LogEntry

QUARANTINED, REPLAYED, DUPLICATE = "quarantined", "replayed", "duplicate"
STATES = (QUARANTINED, REPLAYED, DUPLICATE)

STATE_FIELDS = [
    pa.field("state", pa.string()),
    pa.field("replayed_offset", pa.int64()),  # where a replayed row was stored in the stream
    pa.field("replay_attempts", pa.int32()),
    pa.field("last_attempt_ms", pa.int64()),
]
UPDATE_FIELDS = ["field", "code", "message", "schema_version", *(f.name for f in STATE_FIELDS)]
REPLAY_OF = pa.field("replay_of", pa.int64())  # set on update entries: the row they change
REPLAY_META = b"hw-replay:"


class ReplayMarker(msgspec.Struct, frozen=True, array_like=True):
    """The ``meta`` of a stream entry of replayed rows: row ``i`` came from quarantine
    row ``rows[i]``, whose attempt count becomes ``attempts[i]``, at ``at_ms``."""

    rows: list[int]
    attempts: list[int]
    at_ms: int


def replay_meta(marker: ReplayMarker) -> bytes:
    return REPLAY_META + msgspec.msgpack.encode(marker)


def marker_of(meta: bytes) -> ReplayMarker | None:
    if not meta.startswith(REPLAY_META):
        return None
    return msgspec.msgpack.decode(meta[len(REPLAY_META) :], type=ReplayMarker)


def update_batch(
    replay_of: Sequence[int],
    errors: Sequence[tuple[str | None, str, str] | None],
    attempts: Sequence[int],
    version: int,
    at_ms: int,
) -> pa.RecordBatch:
    """An update entry: row ``i`` changes quarantine row ``replay_of[i]``; ``errors[i]``
    is its new (field, code, message), or None for a row whose event id was stored."""
    n = len(replay_of)
    return pa.RecordBatch.from_pydict(
        {
            "replay_of": pa.array(replay_of, pa.int64()),
            "field": pa.array([e[0] if e else None for e in errors], pa.string()),
            "code": pa.array([e[1] if e else "duplicate_id" for e in errors], pa.string()),
            "message": pa.array(
                [e[2] if e else "its event id is already stored" for e in errors], pa.string()
            ),
            "schema_version": pa.array([version] * n, pa.int32()),
            "state": pa.array([QUARANTINED if e else DUPLICATE for e in errors], pa.string()),
            "replayed_offset": pa.nulls(n, pa.int64()),
            "replay_attempts": pa.array(attempts, pa.int32()),
            "last_attempt_ms": pa.array([at_ms] * n, pa.int64()),
        }
    )


Updates = dict[str, tuple[pa.Table, list[str]]]
Shape = Callable[[list[LogEntry], pa.Table], tuple[pa.Table, Updates]]


def mark_replayed(table: str) -> Shape:
    """A stream feed's shape: its rows, and the quarantine rows they were replayed from."""

    def shape(entries: list[LogEntry], rows: pa.Table) -> tuple[pa.Table, Updates]:
        return rows, replayed_updates(table, entries)

    return shape


def new_quarantined(entries: list[LogEntry], rows: pa.Table) -> tuple[pa.Table, Updates]:
    """The quarantine topic's shape: its rows, in state ``quarantined``, never replayed."""
    n = rows.num_rows
    state = pa.repeat(pa.scalar(QUARANTINED), n)
    rows = rows.set_column(rows.schema.get_field_index("state"), "state", state)
    attempts = pa.repeat(pa.scalar(0, pa.int32()), n)
    i = rows.schema.get_field_index("replay_attempts")
    return rows.set_column(i, "replay_attempts", attempts), {}


def update_in_place(table: str) -> Shape:
    """The quarantine updates topic's shape: no rows to add, each one an update in place."""

    def shape(entries: list[LogEntry], rows: pa.Table) -> tuple[pa.Table, Updates]:
        update = rows.select(UPDATE_FIELDS).append_column("_offset", rows.column("replay_of"))
        return rows.slice(0, 0).select([]), {table: (update, ["_offset"])}

    return shape


def replayed_updates(table: str, entries: list[LogEntry]) -> Updates:
    """The quarantine rows that stream entries of replayed rows mark ``replayed``."""
    rows: list[int] = []
    stored: list[int] = []
    attempts: list[int] = []
    at: list[int] = []
    for e in entries:
        marker = marker_of(e.meta) if e.meta else None
        if marker is None:
            continue
        rows += marker.rows
        stored += range(e.offset, e.offset + len(marker.rows))
        attempts += marker.attempts
        at += [marker.at_ms] * len(marker.rows)
    if not rows:
        return {}
    update = pa.table(
        {
            "_offset": pa.array(rows, pa.int64()),
            "state": pa.array([REPLAYED] * len(rows), pa.string()),
            "replayed_offset": pa.array(stored, pa.int64()),
            "replay_attempts": pa.array(attempts, pa.int32()),
            "last_attempt_ms": pa.array(at, pa.int64()),
        }
    )
    return {table: (update, ["_offset"])}
