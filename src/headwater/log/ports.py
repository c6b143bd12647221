"""The ``Log`` port: append-only, durable, per-topic sequences of Arrow record batches.

Offsets count rows: an entry appended at offset ``o`` with ``n`` rows covers offsets
``o .. o+n-1`` and the next entry starts at ``o+n``. An ``append`` returns only after
the entry is durable (fsynced in the embedded log), so "acked means never lost".
Each entry may carry a small opaque ``meta`` blob (e.g. an idempotency record).

Topics are dot-separated names such as ``"default.readings"`` or
``"default.readings.quarantine"`` (tenant.stream[.suffix]); each part is made of
letters, digits, ``_`` and ``-``. Adapters reject anything else with ``InvalidTopic``,
so a topic is always safe to use as a file name or a NATS subject.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from headwater.errors import BadRequest, HeadwaterError, Overloaded

TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
TOPIC_MAX_CHARS = 200


class InvalidTopic(BadRequest):
    code = "invalid_topic"


class LogClosed(HeadwaterError):
    """The log was closed (or failed) and takes no more appends or reads."""

    code = "log_closed"
    status = 503


class LogFull(LogClosed, Overloaded):
    """The disk holding the log is full: appends are refused until space is free again."""

    code = "log_disk_full"


class LogCorrupted(HeadwaterError):
    """Stored log data failed its checks in a place a crash cannot explain."""

    code = "log_corrupted"


def check_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic name, else raise ``InvalidTopic``."""
    if not isinstance(topic, str) or len(topic) > TOPIC_MAX_CHARS or not TOPIC_RE.match(topic):
        raise InvalidTopic(
            f"invalid log topic {topic!r}: use dot-separated parts of letters, digits, '_' "
            f"and '-' (at most {TOPIC_MAX_CHARS} characters), e.g. 'default.readings'",
            topic=str(topic),
        )
    return topic


@dataclass(frozen=True, slots=True)
class LogEntry:
    topic: str
    offset: int  # offset of the entry's first row
    batch: pa.RecordBatch
    meta: bytes = b""

    @property
    def end(self) -> int:
        return self.offset + int(self.batch.num_rows)


@dataclass(frozen=True, slots=True)
class AppendResult:
    topic: str
    offset: int
    count: int


class Log(Protocol):
    async def append(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        """Append one entry; return when it is durable. Concurrent appends share fsyncs.

        The batch must hold at least one row (``ValueError`` otherwise). Appending after
        ``close`` raises ``LogClosed``.
        """
        ...

    def append_blocking(self, topic: str, batch: pa.RecordBatch, meta: bytes = b"") -> AppendResult:
        """``append`` for callers in threads: blocks until the entry is durable.

        Never call it from an event loop thread; await ``append`` there.
        """
        ...

    def read(self, topic: str, offset: int, max_rows: int = 100_000) -> list[LogEntry]:
        """Entries holding rows at ``offset`` and after, at most ``max_rows`` rows.

        Entries are returned whole, except that an entry straddling ``offset`` is sliced
        so the first row returned is at ``offset``. The first entry is returned even if
        it alone holds more than ``max_rows`` rows. Returns [] at the end of the topic
        (and for a topic never appended to). An ``offset`` below ``start_offset`` (rows
        trimmed by retention) reads from ``start_offset``; callers see the jump in
        ``entries[0].offset``. Never blocks on I/O for long.
        """
        ...

    def read_meta(
        self, topic: str, offset: int, max_entries: int = 10_000
    ) -> list[tuple[int, int, bytes]]:
        """``(first offset, end offset, meta)`` of whole entries, from the one holding
        ``offset`` on (or the first retained one), without decoding their rows."""
        ...

    async def wait(self, topic: str, offset: int, timeout_s: float) -> bool:
        """Wait until the topic's end offset is past ``offset``; False on timeout."""
        ...

    def wait_blocking(self, topic: str, offset: int, timeout_s: float) -> bool:
        """``wait`` for callers in threads."""
        ...

    def wait_any_blocking(self, positions: Mapping[str, int], timeout_s: float) -> bool:
        """Block until any topic's end passes its offset in ``positions`` (True), or
        ``timeout_s`` passes or the log closes (False): one thread serving many readers."""
        ...

    def end_offset(self, topic: str) -> int:
        """One past the last durable row: readers see every row below it (0 if unknown)."""
        ...

    def start_offset(self, topic: str) -> int:
        """Oldest offset still readable (after retention trimmed older entries)."""
        ...

    def topics(self) -> list[str]:
        """Every topic holding entries, sorted."""
        ...

    def trim(self, topic: str, before: int) -> None:
        """Allow entries wholly below ``before`` to be deleted (retention/archiving)."""
        ...

    def size_bytes(self) -> int: ...

    async def close(self) -> None:
        """Finish pending appends (they still become durable), then release resources."""
        ...
