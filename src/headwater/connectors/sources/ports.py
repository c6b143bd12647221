"""What a pull source is to the runtime: partitions, readers, and the chunks they read.

Light on imports on purpose: a reader in a process of its own (``source_processes``)
loads this and its kind's module, not the server's ingest path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from headwater.errors import HeadwaterError

if TYPE_CHECKING:
    from headwater.catalog.sqlite import SourceRecord
    from headwater.ingest.accept import Data

DONE = "done"  # the position of a finished partition (a file read to its end)
Positions = dict[str, tuple[str, int]]  # partition -> (position, seq)


@dataclass(slots=True)
class Chunk:
    """Rows of one partition; ``position`` is where the partition stands after them."""

    data: Data
    fmt: str
    partition: str
    position: str
    done: Callable[[], None] | None = None  # called once the chunk is durable
    lag: int | None = None  # what the partition still holds after this chunk, if known


class End:
    """A reader returns ``END`` when its partition is exhausted (a file read to the end)."""


END = End()


class Reader(Protocol):
    def read(self, timeout_s: float) -> Chunk | End | None:
        """The next chunk, ``END``, or None when nothing came within ``timeout_s``."""
        ...

    def close(self) -> None: ...


class PullSource(Protocol):
    def partitions(self, committed: Positions) -> list[str]:
        """The partitions to read now (a finished file is no longer listed)."""
        ...

    def open(self, partition: str, position: str | None) -> Reader:
        """A reader of ``partition`` from ``position`` (None: the beginning)."""
        ...


class SourceFailed(HeadwaterError):
    """A source cannot run as configured; it stays ``failed`` until re-created."""

    code = "source_failed"


Kinds = dict[str, Callable[["SourceRecord"], PullSource]]


class Relisting:
    """Marker base for kinds with many partitions: a quiet partition yields to a re-list."""
