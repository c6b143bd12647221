"""The ``Log`` port: append-only, durable, per-topic sequences of Arrow record batches.

Offsets count rows: an entry appended at offset ``o`` with ``n`` rows covers offsets
``o .. o+n-1`` and the next entry starts at ``o+n``. An ``append`` returns only after
the entry is durable (fsynced in the embedded log), so "acked means never lost".
Each entry may carry a small opaque ``meta`` blob (e.g. an idempotency record).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa


@dataclass(frozen=True, slots=True)
class LogEntry:
    topic: str
    offset: int  # offset of the entry's first row
    batch: pa.RecordBatch
    meta: bytes = b""

    @property
    def end(self) -> int:
        return self.offset + self.batch.num_rows


@dataclass(frozen=True, slots=True)
class AppendResult:
    topic: str
    offset: int
    count: int


class Log(Protocol):
    async def append(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        """Append one entry; return when it is durable. Concurrent appends share fsyncs."""
        ...

    def read(self, topic: str, offset: int, max_rows: int = 100_000) -> list[LogEntry]:
        """Entries holding rows at ``offset`` and after, up to about ``max_rows`` rows.

        An entry that straddles ``offset`` is sliced so the first row returned is at
        ``offset``. Returns [] at the end of the topic. Never blocks on I/O for long.
        """
        ...

    async def wait(self, topic: str, offset: int, timeout_s: float) -> bool:
        """Wait until the topic's end offset is past ``offset``; False on timeout."""
        ...

    def end_offset(self, topic: str) -> int: ...

    def start_offset(self, topic: str) -> int:
        """Oldest offset still readable (after retention trimmed older entries)."""
        ...

    def topics(self) -> list[str]: ...

    def trim(self, topic: str, before: int) -> None:
        """Allow entries wholly below ``before`` to be deleted (retention/archiving)."""
        ...

    def size_bytes(self) -> int: ...

    async def close(self) -> None: ...
