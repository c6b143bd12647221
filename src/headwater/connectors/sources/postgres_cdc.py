"""PostgreSQL change data capture (kind ``postgres_cdc``): logical replication, ``pgoutput``.

A source owns a publication of its tables and a logical replication slot, both created
when it first runs and dropped when it is deleted. Its one partition (``wal``) goes
through two phases:

1. **Snapshot.** The slot is created over a replication connection with
   ``EXPORT_SNAPSHOT``; the tables are read in a ``REPEATABLE READ`` transaction that
   imports that snapshot (``SET TRANSACTION SNAPSHOT``), so the snapshot holds exactly
   the changes before the slot's consistent point and the slot everything after. Rows
   come with ``op = "snapshot"``; the position is ``snapshot:<table>:<last key>`` until the last
   table is read, then the consistent point's LSN.
2. **Changes.** Committed transactions are read with ``pg_logical_slot_peek_binary_changes``
   (whole transactions, up to ``batch_rows`` changes per read) and decoded
   (``pgoutput``); each row carries ``op`` (``insert``, ``update``, ``delete``,
   ``truncate``), ``lsn`` (its transaction's commit LSN as an integer), ``table`` and
   ``commit_time``. The chunk's position is the end LSN of its last transaction; the
   runtime writes it in the same durable log entry as the rows, and only then is the
   slot advanced to it (``pg_replication_slot_advance``, the chunk's ``done``). After
   ``kill -9`` the slot may still be behind the committed position: transactions ending
   at or before it are skipped, so nothing is lost and nothing is read twice.

A crash during the snapshot resumes it after the last primary key read
(``pg_snapshot``), from a new exported snapshot; the slot, not advanced yet, still holds
every change since the first.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.pg_snapshot import SNAPSHOT, After, Snapshot, parse_position
from headwater.connectors.sources.pgoutput import (
    Begin,
    Change,
    Commit,
    Relation,
    Truncate,
    decode,
    lsn_of,
    lsn_text,
    value_of,
)
from headwater.connectors.sources.ports import Chunk, End, Reader, SourceFailed
from headwater.errors import BadRequest

PARTITION = "wal"
Row = dict[str, object]
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")
NAME_RE = re.compile(r"^[a-z0-9_]{1,63}$")
SESSION = "-c TimeZone=UTC -c DateStyle=ISO"
FORGET_WAIT_S = 15.0


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_source_config")


@dataclass(frozen=True)
class CdcConfig:
    dsn: str
    password: str | None
    tables: tuple[tuple[str, str], ...]  # (schema, table)
    slot: str | None
    publication: str | None
    snapshot: bool
    batch_rows: int
    poll_ms: int

    @classmethod
    def parse(cls, c: dict[str, Any]) -> CdcConfig:
        dsn = c.get("dsn")
        try:
            conninfo_to_dict(dsn) if isinstance(dsn, str) else None
        except psycopg.ProgrammingError as exc:
            raise _bad(f"config.dsn is not a PostgreSQL connection string: {exc}") from exc
        if not isinstance(dsn, str) or not dsn:
            raise _bad('config.dsn: a connection string, e.g. "host=db port=5432 dbname=app '
                       'user=cdc" or "postgresql://cdc@db/app"')  # fmt: skip
        tables = c.get("tables")
        tables = [tables] if isinstance(tables, str) else tables
        if not tables or not all(isinstance(t, str) and TABLE_RE.match(t) for t in tables):
            raise _bad('config.tables: the tables to capture, e.g. ["orders", "shop.items"]')
        qualified = tuple(
            (t.split(".")[0], t.split(".")[1]) if "." in t else ("public", t) for t in tables
        )
        for key in ("slot", "publication"):
            v = c.get(key)
            if v is not None and not (isinstance(v, str) and NAME_RE.match(v)):
                raise _bad(f"config.{key}: lowercase letters, digits and '_', at most 63")
        batch, poll = c.get("batch_rows", 10_000), c.get("poll_ms", 200)
        if not (isinstance(batch, int) and 1 <= batch <= 1_000_000):
            raise _bad("config.batch_rows: an integer from 1 to 1000000")
        if not (isinstance(poll, int) and 10 <= poll <= 60_000):
            raise _bad("config.poll_ms: an integer from 10 to 60000")
        password = c.get("password")
        if password is not None and not isinstance(password, str):
            raise _bad("config.password must be a string")
        return cls(dsn, password, qualified, c.get("slot"), c.get("publication"),
                   bool(c.get("snapshot", True)), batch, poll)  # fmt: skip

    def connect(self, **kw: Any) -> psycopg.Connection[Any]:
        if self.password is not None:
            kw["password"] = self.password
        return psycopg.connect(self.dsn, options=SESSION, connect_timeout=10, **kw)


class PostgresCdcSource:
    """The ``PullSource`` of one PostgreSQL database's changes to ``config.tables``."""

    def __init__(self, rec: SourceRecord) -> None:
        self.config = CdcConfig.parse(rec.config)
        digest = hashlib.sha1(f"{rec.tenant}/{rec.name}/{rec.created_ms}".encode()).hexdigest()
        self.slot = self.config.slot or f"headwater_{digest[:20]}"
        self.publication = self.config.publication or self.slot
        self.owns_publication = self.config.publication is None

    def partitions(self, committed: object) -> list[str]:
        return [PARTITION]

    def open(self, partition: str, position: str | None) -> Reader:
        return CdcReader(self, position)

    def forget(self) -> None:
        """Drop the slot (a reader may still hold it for a moment) and our publication."""
        with self.config.connect(autocommit=True) as conn:
            deadline = time.monotonic() + FORGET_WAIT_S
            while True:
                try:
                    conn.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name = %s", (self.slot,),
                    )  # fmt: skip
                    break
                except psycopg.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            if self.owns_publication:
                conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(
                    sql.Identifier(self.publication)))  # fmt: skip


class CdcReader:
    """Snapshot, then changes; one connection, used by one read at a time."""

    def __init__(self, source: PostgresCdcSource, position: str | None) -> None:
        self._src = source
        self._cfg = cfg = source.config
        self._busy = threading.Lock()
        self._conn = cfg.connect(autocommit=True)
        self._snap: Snapshot | None = None
        self._relations: dict[int, Relation] = {}
        try:
            self._ensure_publication()
            start = self._slot_start()
            if position is not None and position.startswith(SNAPSHOT) and start is not None:
                self._position = 0
                self._snap = self._resume_snapshot(start, parse_position(position))
            elif position is None or position.startswith(SNAPSHOT):
                self._position = 0
                self._snap = self._start_snapshot()
            else:
                self._position = lsn_of(position)
                self._catch_up_slot(start)
        except BaseException:
            self._conn.close()
            raise

    # setup --------------------------------------------------------------------------
    def _ensure_publication(self) -> None:
        src = self._src
        tables = sql.SQL(", ").join(sql.Identifier(s, t) for s, t in self._cfg.tables)
        found = self._conn.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (src.publication,)
        ).fetchone()
        if found is None:
            if not src.owns_publication:
                raise SourceFailed(f"the publication {src.publication!r} does not exist")
            self._conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                sql.Identifier(src.publication), tables))  # fmt: skip

    def _slot_start(self) -> int | None:
        """Where the slot stands (its confirmed LSN), or None when there is none."""
        row = self._conn.execute(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (self._src.slot,),
        ).fetchone()
        return None if row is None else lsn_of(row[0] or "0/0")

    def _start_snapshot(self) -> Snapshot:
        """A fresh slot and the snapshot it exports (a slot left by a crashed snapshot goes)."""
        slot = self._src.slot
        self._conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s", (slot,),
        )  # fmt: skip
        return self._exported(slot, "", lambda exported, point: Snapshot(
            self._cfg.connect(), list(self._cfg.tables), exported, point, point))  # fmt: skip

    def _resume_snapshot(self, start: int, after: After) -> Snapshot:
        """After a crash mid-snapshot: the slot (never advanced yet) still starts where the
        first snapshot was taken; the rest of the tables is read from a new snapshot, taken
        by a temporary slot. Changes between the two snapshots come from the slot: those
        of rows in the rest come then both as changes and in the snapshot (which, at its
        later LSN, holds their state)."""
        return self._exported(self._src.slot[:50] + "_resume", "TEMPORARY",
                              lambda exported, point: Snapshot(
            self._cfg.connect(), list(self._cfg.tables), exported, start, point, after))  # fmt: skip

    def _exported(
        self, slot: str, temporary: str, make: Callable[[str | None, int], Snapshot]
    ) -> Snapshot:
        """Create ``slot`` over a replication connection, exporting its snapshot, and
        ``make`` the reader that imports it while the export is alive."""
        repl = self._cfg.connect(autocommit=True, replication="database")
        try:
            res = repl.pgconn.exec_(
                f"CREATE_REPLICATION_SLOT {slot} {temporary} LOGICAL pgoutput "
                "EXPORT_SNAPSHOT".encode()
            )
            if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
                raise SourceFailed(
                    f"cannot create the replication slot {slot}: "
                    f"{res.error_message.decode(errors='replace').strip()} (the database needs "
                    "wal_level=logical and a user with the REPLICATION attribute)"
                )
            point = lsn_of((res.get_value(0, 1) or b"").decode())
            exported = (res.get_value(0, 2) or b"").decode()
            return make(exported if self._cfg.snapshot else None, point)
        finally:
            repl.close()  # the snapshot was imported (or not wanted): the export may end

    def _catch_up_slot(self, start: int | None) -> None:
        """The slot may lag the committed position (a crash before ``done``): move it."""
        if start is None:
            raise SourceFailed(
                f"the replication slot {self._src.slot} is gone, so changes since "
                f"{lsn_text(self._position)} are lost to this source; delete and re-create it"
            )
        if start < self._position:
            self._advance(self._position)

    def _advance(self, lsn: int) -> None:
        self._conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self._src.slot, lsn_text(lsn))
        )

    # reading ------------------------------------------------------------------------
    @property
    def reads_ahead(self) -> bool:
        """Whether the next read may start before the last chunk's ``done`` (a reader in a
        process of its own reads ahead): yes during the snapshot, whose chunks need no
        ``done``; not for changes, which are read from the slot's confirmed point on, so a
        read before ``done`` moved it would only find the last chunk's changes again (and
        move the slot past them, before they are durable, to skip them)."""
        return self._snap is not None

    def read(self, timeout_s: float) -> Chunk | End | None:
        with self._busy:
            if self._snap is not None:
                return self._snapshot_chunk()
            deadline = time.monotonic() + timeout_s
            while True:
                chunk = self._changes()
                if chunk is not None or time.monotonic() >= deadline:
                    return chunk
                time.sleep(min(self._cfg.poll_ms / 1000, max(0.0, deadline - time.monotonic())))

    def _snapshot_chunk(self) -> Chunk:
        snap = self._snap
        assert snap is not None
        got = snap.next(self._cfg.batch_rows)
        if got is None:  # every table read: from now on, the slot
            self._snap = None
            self._position = snap.point
            return Chunk(pa.table({}), "arrow", PARTITION, lsn_text(snap.point))
        return Chunk(got[0], "ndjson", PARTITION, snap.position)

    def _changes(self) -> Chunk | None:
        found = self._conn.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
            "'proto_version', '1', 'publication_names', %s)",
            (self._src.slot, self._cfg.batch_rows, self._src.publication),
        ).fetchall()
        rows: list[Row] = []
        txn: list[Row] = []
        end = self._position
        for (data,) in found:
            msg = decode(bytes(data))
            if isinstance(msg, Relation):
                self._relations[msg.oid] = msg
            elif isinstance(msg, Begin):
                txn = []
            elif isinstance(msg, Change | Truncate):
                txn += self._rows_of(msg)
            elif isinstance(msg, Commit) and msg.end_lsn > self._position:
                at = _iso(msg.commit_ms)
                for r in txn:  # already committed transactions are skipped
                    r["lsn"], r["commit_time"] = msg.commit_lsn, at
                rows += txn
                end = msg.end_lsn
        if end == self._position:
            if found:  # all committed before a crash: let the slot catch up
                self._advance(end)
            return None
        self._position = end
        if not rows:  # transactions with nothing of ours: no entry needed to move on
            self._advance(end)
            return None
        behind = self._conn.execute(  # the lag: WAL bytes written after this chunk
            "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), %s::pg_lsn)::bigint",
            (lsn_text(end),),
        ).fetchone()
        return Chunk(ndjson(rows), "ndjson", PARTITION, lsn_text(end),
                     done=lambda: self._durable(end),
                     lag=max(0, int(behind[0])) if behind else None)  # fmt: skip

    def _rows_of(self, msg: Change | Truncate) -> list[Row]:
        if isinstance(msg, Truncate):
            return [{"op": "truncate", "table": self._name(self._relations[r])}
                    for r in msg.relations if r in self._relations]  # fmt: skip
        rel = self._relations[msg.relation]
        row: Row = {
            col.name: value_of(text, col.type_oid)
            for col, text in zip(rel.columns, msg.values, strict=True)
        }
        row["op"], row["table"] = msg.op, self._name(rel)
        return [row]

    @staticmethod
    def _name(rel: Relation) -> str:
        return rel.name if rel.schema == "public" else f"{rel.schema}.{rel.name}"

    def _durable(self, lsn: int) -> None:
        """The rows up to ``lsn`` are in the log: the slot may let go of them."""
        with self._busy:
            self._advance(lsn)

    def close(self) -> None:
        with self._busy:
            if self._snap is not None:
                self._snap.close()
            self._conn.close()


def ndjson(rows: list[Row]) -> bytes:
    """Rows as NDJSON: the stream decodes and validates them as it does an HTTP body."""
    return b"\n".join(orjson.dumps(r) for r in rows) + b"\n"


def _iso(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
