"""Where each source partition stands: from the log entries' meta, and a copy on disk.

The durable record of a position is the ``SourceCommit`` in the meta of the log entry
that made its rows durable (``ingest.accept``). Scanning the whole log on every start
would be slow, and retention eventually trims old entries, so after each commit the
runtime also copies the position into this SQLite file, with the log offset up to which
the file knows the source's commits ("progress", per topic), in one transaction. A
start reads the file, then the log's entry headers from the progress on, and keeps the
commit with the highest ``seq`` per partition.

The file needs no fsync of its own: if its last transactions are lost in a crash, its
progress is older too, and the start finds those commits in the log.

A start copies what it found in the log into the file (``PositionFile.keep``), with the
offsets it read up to. Without that, a commit that reached the log but not the file (a
crash between the two) would be known only below the file's progress, and the next
commit, of another partition, would move the progress past it: the start after that
would miss it, and re-read that partition's last chunk (a finished file's, for one,
which nothing commits again).

>>> import tempfile, pathlib
>>> f = PositionFile(pathlib.Path(tempfile.mkdtemp()) / "sources.sqlite")
>>> f.save("t", "s", "p0", "42", 3, "t.readings", 10)
>>> f.load("t", "s")
({'p0': ('42', 3)}, {'t.readings': 10})
>>> f.keep("t", "s", Recovered({"p0": ("done", 4)}, {"p0": ("done", 4)}, {"t.readings": 12}))
>>> f.load("t", "s")
({'p0': ('done', 4)}, {'t.readings': 12})
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from headwater.connectors.sources.ports import Positions
from headwater.ingest.accept import commit_of
from headwater.log.ports import Log

SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (
    tenant TEXT NOT NULL, source TEXT NOT NULL, partition TEXT NOT NULL,
    position TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, source, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS progress (
    tenant TEXT NOT NULL, source TEXT NOT NULL, topic TEXT NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (tenant, source, topic)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Recovered:
    """What a start found: each partition's newest commit (``positions``), the commits
    among them that only the log held (``unsaved``), and the offset up to which each
    topic was read (``read_to``)."""

    positions: Positions
    unsaved: Positions = field(default_factory=dict)
    read_to: dict[str, int] = field(default_factory=dict)


class PositionFile:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # the log is the durable copy
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def save(
        self, tenant: str, source: str, partition: str, position: str, seq: int,
        topic: str, end_offset: int,
    ) -> None:  # fmt: skip
        """Record a commit the log holds at ``topic`` below ``end_offset``."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            db.execute(
                "INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)",
                (tenant, source, partition, position, seq),
            )
            db.execute(
                "INSERT OR REPLACE INTO progress VALUES (?, ?, ?, ?)",
                (tenant, source, topic, end_offset),
            )
            db.execute("COMMIT")

    def load(self, tenant: str, source: str) -> tuple[Positions, dict[str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT partition, position, seq FROM positions WHERE tenant = ? AND source = ?",
                (tenant, source),
            ).fetchall()
            prog = self._db.execute(
                "SELECT topic, next_offset FROM progress WHERE tenant = ? AND source = ?",
                (tenant, source),
            ).fetchall()
        return {p: (pos, seq) for p, pos, seq in rows}, {t: o for t, o in prog}

    def keep(self, tenant: str, source: str, found: Recovered) -> None:
        """Copy what a start found in the log, and how far it read, in one transaction.

        Only ever forward: a position gives way to a higher ``seq``, a progress to a
        higher offset (a commit saved meanwhile stays)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO positions VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, source, partition) DO UPDATE SET "
                "position = excluded.position, seq = excluded.seq WHERE excluded.seq > seq",
                [(tenant, source, p, pos, seq) for p, (pos, seq) in found.unsaved.items()],
            )
            db.executemany(
                "INSERT INTO progress VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant, source, topic) DO UPDATE SET "
                "next_offset = max(next_offset, excluded.next_offset)",
                [(tenant, source, t, offset) for t, offset in found.read_to.items()],
            )
            db.execute("COMMIT")

    def forget(self, tenant: str, source: str) -> None:
        with self._lock:
            for table in ("positions", "progress"):
                self._db.execute(
                    f"DELETE FROM {table} WHERE tenant = ? AND source = ?", (tenant, source)
                )

    def close(self) -> None:
        self._db.close()


def recover(
    log: Log, file: PositionFile, tenant: str, source: str, epoch: int, topics: Iterable[str]
) -> Recovered:
    """The newest committed position of each partition of a source (file, then log).

    Nothing is written: a caller that owns the source hands the answer to
    ``PositionFile.keep`` (see the module doc)."""
    found, progress = file.load(tenant, source)
    unsaved: Positions = {}
    read_to: dict[str, int] = {}
    for topic in topics:
        offset = max(progress.get(topic, 0), log.start_offset(topic))
        while entries := log.read_meta(topic, offset):
            for _, _, meta in entries:
                c = commit_of(meta) if meta else None
                if c is None or (c.tenant, c.source, c.epoch) != (tenant, source, epoch):
                    continue
                if c.seq > found.get(c.partition, ("", -1))[1]:
                    found[c.partition] = unsaved[c.partition] = (c.position, c.seq)
            offset = entries[-1][1]
        if offset > progress.get(topic, 0):
            read_to[topic] = offset
    return Recovered(found, unsaved, read_to)
