"""The initial snapshot of a ``postgres_cdc`` source: its tables as of an exported
snapshot, each read in primary-key order, so that a position says exactly what was read.

The position of a snapshot chunk is ``snapshot:<table index>:<last key>`` (the key as a
JSON list of its columns' text). A snapshot resumed after a crash reads, from a new
exported snapshot, the rows after that key (``WHERE (key) > (last)``, PostgreSQL's own
order) and the tables after that one; the rows read before the crash are not read again.
A table without a primary key has no such order: a crash within it reads it again whole.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

SNAPSHOT = "snapshot:"
After = tuple[int, list[str] | None]  # table index, last key read there (None: none)


def parse_position(position: str) -> After:
    """``snapshot:1:["42"]`` → ``(1, ["42"])``; anything else starts at the beginning.

    >>> parse_position('snapshot:1:["42"]'), parse_position("snapshot:0:null")
    ((1, ['42']), (0, None))
    """
    try:
        index, key = position.removeprefix(SNAPSHOT).split(":", 1)
        last = orjson.loads(key)
        return int(index), [str(k) for k in last] if isinstance(last, list) else None
    except ValueError:
        return 0, None


class Snapshot:
    """Reads ``tables`` in a ``REPEATABLE READ`` transaction that imports ``exported``.

    ``point`` is where the slot's changes start (the changes phase begins there);
    ``lsn`` is the LSN snapshot rows carry: the exported snapshot's own point (later than
    ``point`` for a resumed snapshot)."""

    def __init__(
        self, conn: psycopg.Connection[Any], tables: list[tuple[str, str]], exported: str | None,
        point: int, lsn: int, after: After = (0, None),
    ) -> None:  # fmt: skip
        self.point, self.lsn = point, lsn
        self.position = f"{SNAPSHOT}{after[0]}:null"
        self._tables = list(enumerate(tables))[after[0] :] if exported else []
        self._after = after[1]
        self._at = datetime.now(UTC)  # the time snapshot rows carry
        self._conn = conn
        self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._cur: psycopg.ServerCursor[Any] | None = None
        self._keyed = False
        self._index, self._table = 0, ""
        if exported:
            self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))

    def next(self, n: int) -> tuple[bytes, int] | None:
        """Up to ``n`` rows of one table as NDJSON, and how many (``position`` then says
        where they end); None when every table has been read."""
        while True:
            if self._cur is None:
                if not self._tables:
                    self.close()
                    return None
                index, (schema, table) = self._tables.pop(0)
                self._open(index, schema, table, self._after)
                self._after = None
            assert self._cur is not None
            got = self._cur.fetchmany(n)
            if got:
                last = list(got[-1][:-1]) if self._keyed else None
                self.position = f"{SNAPSHOT}{self._index}:{orjson.dumps(last).decode()}"
                meta = orjson.dumps({"op": "snapshot", "lsn": self.lsn, "table": self._table,
                                     "commit_time": self._at})  # fmt: skip
                tail = b"," + meta[1:]  # the row's own fields, then these (they win)
                lines = [r[-1].encode()[:-1] + tail if r[-1] != "{}" else meta for r in got]
                return b"\n".join(lines) + b"\n", len(got)
            self._cur.close()
            self._cur = None

    def _open(self, index: int, schema: str, table: str, after: list[str] | None) -> None:
        """Rows as JSON made by the database (``to_json``: numbers, booleans, JSON, ISO
        timestamps in UTC), after their key's text, in key order."""
        ident = sql.Identifier(schema, table)
        key = self._conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", (ident.as_string(self._conn),),
        ).fetchall()  # fmt: skip
        self._keyed = bool(key)
        self._index = index
        self._table = table if schema == "public" else f"{schema}.{table}"
        keys = sql.SQL(", ").join(sql.Identifier("t", k) for k, _ in key)
        query = sql.SQL("SELECT {} to_json(t)::text FROM {} AS t").format(
            sql.SQL("").join(sql.SQL("{}::text, ").format(sql.Identifier("t", k)) for k, _ in key),
            ident,
        )
        params: list[str] = []
        if key and after is not None and len(after) == len(key):
            last = sql.SQL(", ").join(sql.SQL("%s::" + t) for _, t in key)  # type names
            query += sql.SQL(" WHERE ({}) > ({})").format(keys, last)
            params = after
        if key:
            query += sql.SQL(" ORDER BY {}").format(keys)
        self._cur = self._conn.cursor(name="headwater_snapshot")
        self._cur.execute(query, params)

    def close(self) -> None:
        if not self._conn.closed:
            with contextlib.suppress(psycopg.Error):  # a broken connection: nothing to undo
                self._conn.rollback()
            self._conn.close()
        cur, self._cur = self._cur, None
        if cur is not None:  # stopped mid-table: closing the connection ended it on the
            cur.close()  # server; this marks the cursor object closed too
