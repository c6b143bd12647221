"""Erased data subjects: rows of theirs received before the erasure are never read again.

An erasure deletes a subject's stored rows; the hot log is append-only and keeps its
entries until log retention trims them, so every reader of the log (the store's
materializer, pipelines, backfills) drops the rows a tombstone covers: those whose
subject field holds the erased value and that were received at or before the erasure.
Rows received later are new data and pass. Rows an erasure already blanked in the log
(``_received_ms`` below zero, see ``headwater.log.rewrite``) never pass.

>>> t = Tombstones()
>>> t.add("acme", "signups", "u1", 1_000)
>>> t.keep("acme", "signups", pa.array(["u1", "u2", "u1"]), pa.array([900, 900, 1_100])).to_pylist()
[False, True, True]
>>> t.keep("acme", "signups", pa.array([None, "u2"]), pa.array([-1, 900])).to_pylist()
[False, True]
>>> t.keep("acme", "orders", pa.array(["u1"]), pa.array([900])) is None
True
"""

from __future__ import annotations

import threading

import pyarrow as pa
import pyarrow.compute as pc


class Tombstones:
    def __init__(self) -> None:
        self._by_stream: dict[tuple[str, str], dict[str, int]] = {}
        self._lock = threading.Lock()

    def add(self, tenant: str, stream: str, value: str, erased_ms: int) -> None:
        with self._lock:
            found = dict(self._by_stream.get((tenant, stream), {}))
            found[value] = max(erased_ms, found.get(value, erased_ms))
            self._by_stream = {**self._by_stream, (tenant, stream): found}

    def any(self, tenant: str, stream: str) -> bool:
        return (tenant, stream) in self._by_stream

    def keep(
        self, tenant: str, stream: str, subjects: pa.Array, received_ms: pa.Array
    ) -> pa.Array | None:
        """A boolean mask of the rows to keep, or None when the stream has no tombstones."""
        found = self._by_stream.get((tenant, stream))
        if not found:
            return None
        values = pa.array(list(found), pa.string())
        times = pa.array(list(found.values()), pa.int64())
        at = pc.index_in(subjects.cast(pa.string()), value_set=values)
        erased_ms = pc.take(times, at)  # null where the subject was not erased
        covered = pc.fill_null(pc.less_equal(received_ms, erased_ms), False)
        blanked = pc.fill_null(pc.less(received_ms, 0), False)
        return pc.invert(pc.or_(covered, blanked))

    def filter(self, tenant: str, stream: str, subject: str | None, rows: pa.Table) -> pa.Table:
        """``rows`` (with the subject field and ``_received_ms``) without the erased ones."""
        if subject is None or not self.any(tenant, stream):
            return rows
        mask = self.keep(
            tenant, stream, rows.column(subject).combine_chunks(),
            rows.column("_received_ms").combine_chunks(),
        )  # fmt: skip
        return rows if mask is None else rows.filter(mask)
