"""The initial snapshot of a ``postgres_cdc`` source: its tables as of an exported
snapshot, each read in primary-key order, so that a position says exactly what was read.

The position of a snapshot chunk is ``snapshot:<table index>:<last key>`` (the key as a
JSON list of its columns' text). A snapshot resumed after a crash reads, from a new
exported snapshot, the rows after that key (``WHERE (key) > (last)``, PostgreSQL's own
order) and the tables after that one; the rows read before the crash are not read again.
A table without a primary key has no such order: a crash within it reads it again whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql

from headwater.connectors.sources.pgoutput import value_of

SNAPSHOT = "snapshot:"
Row = dict[str, object]
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
        self._at = datetime.now(UTC)
        self._conn = conn
        self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        self._cur: psycopg.ServerCursor[Any] | None = None
        self._cols: list[tuple[str, int]] = []
        self._key_at: list[int] = []
        self._index, self._table = 0, ""
        if exported:
            self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))

    def next(self, n: int) -> list[Row] | None:
        """Up to ``n`` rows of one table (``position`` then says where they end), or None
        when every table has been read."""
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
                last = [got[-1][i] for i in self._key_at] if self._key_at else None
                self.position = f"{SNAPSHOT}{self._index}:{orjson.dumps(last).decode()}"
                meta: Row = {"op": "snapshot", "lsn": self.lsn, "table": self._table,
                             "commit_time": self._at}  # fmt: skip
                cols = self._cols
                return [
                    {**{c: value_of(v, oid) for (c, oid), v in zip(cols, r, strict=True)}, **meta}
                    for r in got
                ]
            self._cur.close()
            self._cur = None

    def _open(self, index: int, schema: str, table: str, after: list[str] | None) -> None:
        ident = sql.Identifier(schema, table)
        name = ident.as_string(self._conn)
        cols = self._conn.execute(
            "SELECT attname, atttypid::int FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (name,),
        ).fetchall()  # fmt: skip
        key = self._conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", (name,),
        ).fetchall()  # fmt: skip
        self._cols = [(str(c), int(o)) for c, o in cols]
        names = [c for c, _ in self._cols]
        self._key_at = [names.index(k) for k, _ in key]
        self._index = index
        self._table = table if schema == "public" else f"{schema}.{table}"
        query = sql.SQL("SELECT {} FROM {}").format(  # as text; aliased, so that ORDER BY
            sql.SQL(", ").join(  # sorts by the columns, not by their text
                sql.SQL("{}::text AS {}").format(sql.Identifier(c), sql.Identifier(f"_c{i}"))
                for i, c in enumerate(names)
            ),
            ident,
        )
        keys = sql.SQL(", ").join(sql.Identifier(k) for k, _ in key)
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
            self._conn.rollback()
            self._conn.close()
