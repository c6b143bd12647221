"""Idempotency answers on disk, so that memory and restarts hold only the recent ones.

The durable record of an answer is the meta of the log entries its request wrote.
Reading those back on every start would cost a scan of the whole retained log, and
keeping every answer of the last ``idempotency_ttl`` in memory would grow with the
request rate. So a background pass copies the answers of new log entries into this
SQLite file, with each topic's offset up to which it has copied them ("progress"),
in one transaction. A start then reads the log only from there; a lookup that misses
memory asks the file.

The file needs no fsync of its own: if its last transactions are lost in a crash,
its progress is older too, and the start reads those entries from the log again.

>>> import tempfile, pathlib
>>> from headwater.ingest.idempotency import IdemRecord
>>> f = AnswerFile(pathlib.Path(tempfile.mkdtemp()) / "answers.sqlite")
>>> f.add([("t", "s", IdemRecord("k1", "d", b"{}", 5))], {"t.s": 10})
>>> f.get("t", "s", "k1").answer, f.progress()
(b'{}', {'t.s': 10})
>>> f.expire(before_ms=6), f.get("t", "s", "k1")
(1, None)
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from headwater.ingest.accept import SOURCE_META
from headwater.ingest.idempotency import IdempotencyKeys, IdemRecord, records_of
from headwater.ingest.quarantine import REPLAY_META
from headwater.ingest.streams import StreamState
from headwater.log.ports import Log

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    tenant TEXT NOT NULL, stream TEXT NOT NULL, key TEXT NOT NULL,
    body_sha256 TEXT NOT NULL, answer BLOB NOT NULL, at_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, stream, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_age ON answers (at_ms);
CREATE TABLE IF NOT EXISTS progress (topic TEXT PRIMARY KEY, next_offset INTEGER NOT NULL);
"""


class AnswerFile:
    """Answers by (tenant, stream, key), and the log offsets they were copied up to.

    Lookups come from the event loop, copies and expiry from the housekeeping thread:
    each side has its own connection (WAL lets a reader run beside the writer).
    """

    def __init__(self, path: Path) -> None:
        self._writer = self._connect(path)
        self._writer.executescript(SCHEMA)
        self._reader = self._connect(path)
        self._write_lock = threading.Lock()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")  # the log is the durable copy
        return db

    def get(self, tenant: str, stream: str, key: str) -> IdemRecord | None:
        row = self._reader.execute(
            "SELECT key, body_sha256, answer, at_ms FROM answers"
            " WHERE tenant = ? AND stream = ? AND key = ?",
            (tenant, stream, key),
        ).fetchone()
        return IdemRecord(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def add(self, records: list[tuple[str, str, IdemRecord]], progress: dict[str, int]) -> None:
        """Store answers and move the topics' progress, in one transaction."""
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                    [(t, s, r.key, r.body_sha256, r.answer, r.at_ms) for t, s, r in records],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO progress VALUES (?, ?)", list(progress.items())
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def progress(self) -> dict[str, int]:
        """Per topic, the offset below which every entry's answers are in the file."""
        with self._write_lock:
            rows = self._writer.execute("SELECT topic, next_offset FROM progress").fetchall()
        return {topic: offset for topic, offset in rows}

    def expire(self, before_ms: int) -> int:
        with self._write_lock:
            return self._writer.execute(
                "DELETE FROM answers WHERE at_ms < ?", (before_ms,)
            ).rowcount

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


Answer = tuple[str, str, IdemRecord]  # tenant, stream, record


def answer_topics(st: StreamState) -> tuple[str, ...]:
    """The topics whose entries may carry a stream's answers (and that retention trims)."""
    return st.topic, st.quarantine_topic, st.idempotency_topic, st.quarantine_updates_topic


def read_answers(log: Log, st: StreamState, topic: str, start: int) -> tuple[list[Answer], int]:
    """The answers in the meta of ``topic``'s entries from ``start`` on; and where it ended.

    Only the entries' headers are read: their rows stay undecoded.
    """
    found: list[Answer] = []
    offset = max(start, log.start_offset(topic))
    while entries := log.read_meta(topic, offset):
        for _, _, meta in entries:
            # replays keep no answers; a source's entries keep its position instead
            if meta and not meta.startswith((REPLAY_META, SOURCE_META)):
                found += [(st.tenant, st.schema.name, r) for r in records_of(meta)]
        offset = entries[-1][1]
    return found, offset


def copy_answers(log: Log, streams: Iterable[StreamState], keys: IdempotencyKeys) -> dict[str, int]:
    """Copy the answers of the log entries written since the last copy to the disk.

    Returns each topic's progress (every answer below it is on disk), for retention.
    """
    disk = keys.disk
    assert disk is not None
    progress = disk.progress()
    for st in streams:
        copied: list[Answer] = []
        moved: dict[str, int] = {}
        for topic in answer_topics(st):
            found, end = read_answers(log, st, topic, progress.get(topic, 0))
            copied += found
            if end != progress.get(topic):
                moved[topic] = progress[topic] = end
        if moved:
            disk.add(copied, moved)
            keys.forget_copied(copied)
    return progress
