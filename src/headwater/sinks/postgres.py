"""The PostgreSQL sink (kind ``postgres``): upsert by key, exactly once.

Each batch of rows is written in one PostgreSQL transaction together with the sink's
progress: ``COPY`` into a temporary table (CSV made by Arrow), then ``INSERT ... ON
CONFLICT (key) DO UPDATE`` into the target, then the row of ``headwater_sink_progress``
moved from the batch's first offset to its end (``WHERE next_offset = <first>``, so a
second writer, or a retry of a batch whose commit did land, changes nothing and rolls
back). The progress in the target database is the truth: a restart, or a lost
connection, reads it again and goes on from there, so after ``kill -9`` every row is
applied once. Within a batch the last row of each key wins. While a batch's keys may all
be new it is copied straight into the table under a savepoint (half the database's work);
a key already there rolls that back, and the batch takes the upsert.

A batch the target refuses for its data (class 22 or 23: a value that does not fit,
a constraint) is cut in halves, each under a savepoint, down to the single rows that
fail; those go to the dead-letter table ``<sink>_dlq`` (written first, upserted by row
key, so a repeat writes them once), the others are applied. A lost connection or any
other error backs off (capped exponential, full jitter) and tries the same batch again;
``produced = delivered + dead_lettered + pending`` holds throughout.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from psycopg import sql

from headwater.sinks.config import PostgresConfig
from headwater.sinks.http import Slots, Stats
from headwater.sinks.policy import Aimd, Breaker

PG_TYPES = {"string": "text", "int64": "bigint", "double": "double precision",
            "bool": "boolean", "timestamp": "timestamptz"}  # fmt: skip
BAD_DATA = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
Refused = tuple[int, str]  # a row's index (``_i``) and the database's reason


class PostgresDelivery:
    """What the status and the metrics read of a delivery: attempts, breaker, slots."""

    def __init__(self, config: PostgresConfig, breaker: Breaker) -> None:
        self.config = config
        self.breaker = breaker
        self.stats = Stats()
        self.slots = Slots(Aimd(1))

    async def close(self) -> None:
        return None


class Target:
    """One connection to the target database, and the statements of one sink."""

    def __init__(self, cfg: PostgresConfig, table: str, sink_id: str) -> None:
        self.cfg, self.sink_id = cfg, sink_id
        schema, _, name = table.rpartition(".")
        self.table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
        self.progress = sql.Identifier(cfg.progress_table)
        self.stage = sql.Identifier(
            "headwater_stage_" + hashlib.sha1(sink_id.encode()).hexdigest()[:16]
        )
        kw: dict[str, Any] = {"password": cfg.password} if cfg.password is not None else {}
        self.conn = psycopg.connect(
            cfg.dsn, connect_timeout=10, options="-c TimeZone=UTC", autocommit=True, **kw
        )
        self._ready: tuple[str, ...] = ()  # the columns the statements were made for
        self._unique = False  # the table has an immediate unique index on exactly ``key``
        self._skip, self._wait = 0, 1  # batches to go before COPY straight in is tried again

    def restore(self, topic: str, first: int) -> tuple[int, int, int]:
        """(next offset, delivered, dead-lettered) from the progress table (made if new)."""
        with self.conn.transaction():
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (sink text PRIMARY KEY, topic text NOT NULL, "
                "next_offset bigint NOT NULL, delivered bigint NOT NULL, "
                "dead_lettered bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(self.progress))  # fmt: skip
            self.conn.execute(sql.SQL(
                "INSERT INTO {} (sink, topic, next_offset, delivered, dead_lettered) "
                "VALUES (%s, %s, %s, 0, 0) ON CONFLICT (sink) DO NOTHING"
            ).format(self.progress), (self.sink_id, topic, first))  # fmt: skip
            row = self.conn.execute(sql.SQL(
                "SELECT next_offset, delivered, dead_lettered FROM {} WHERE sink = %s"
            ).format(self.progress), (self.sink_id,)).fetchone()  # fmt: skip
        assert row is not None
        return int(row[0]), int(row[1]), int(row[2])

    def prepare(self, schema: pa.Schema) -> None:
        """The target table (created if missing and allowed) and the staging table."""
        cols = tuple(schema.names)
        if cols == self._ready:
            return
        missing = [k for k in self.cfg.key if k not in cols]
        if missing:
            raise ValueError(f"the key columns {missing} are not in the rows ({list(cols)})")
        with self.conn.transaction():
            if self.cfg.create_table:
                defs = [sql.SQL("{} {}").format(sql.Identifier(f.name), sql.SQL(_pg_type(f.type)))
                        for f in schema]  # fmt: skip
                key = sql.SQL(", ").join(map(sql.Identifier, self.cfg.key))
                self.conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({}))")
                                  .format(self.table, sql.SQL(", ").join(defs), key))  # fmt: skip
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.stage))
            self.conn.execute(sql.SQL(
                "CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            ).format(self.stage, self.table))  # fmt: skip
            self._unique = self._has_unique_key()
        names = sql.SQL(", ").join(map(sql.Identifier, cols))
        rest = [c for c in cols if c not in self.cfg.key]
        update = (
            sql.SQL("DO UPDATE SET {}").format(sql.SQL(", ").join(
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in rest))
            if rest else sql.SQL("DO NOTHING")
        )  # fmt: skip
        self.copy = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self.stage, names)
        self.copy_in = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(self.table, names)
        self.upsert = sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
            self.table, names, names, self.stage,
            sql.SQL(", ").join(map(sql.Identifier, self.cfg.key)), update,
        )  # fmt: skip
        self._ready = cols

    def write(self, rows: pa.Table, start: int, end: int,
              dead: Callable[[list[Refused]], None]) -> list[Refused]:  # fmt: skip
        """Apply ``rows`` (offsets ``start``..``end``) and move the progress, in one
        transaction; the rows refused (by index). Of each key the last row is written;
        where it is refused, the one before it (as if the rows came one by one).
        ``Moved`` when the progress was not at ``start`` (then nothing is done)."""
        self.prepare(rows.schema)
        rows = rows.append_column("_i", pa.array(np.arange(rows.num_rows), pa.int64()))
        with self.conn.transaction():
            if not self.cfg.synchronous_commit:  # see docs/sinks.md: lost with its progress
                self.conn.execute("SET LOCAL synchronous_commit = off")
            refused: list[Refused] = []
            todo = last_per_key(rows, self.cfg.key)
            if self._copied_in(todo):
                todo = todo.slice(0, 0)
            while todo.num_rows:
                now = self._apply(todo)
                refused += now
                todo = last_per_key(_earlier(rows, self.cfg.key, now, refused), self.cfg.key)
            if refused:
                dead(refused)  # dead letters are stored before the commit that skips them
            self._progress(rows.num_rows - len(refused), len(refused), start, end)
        return refused

    def replay(self, rows: pa.Table) -> list[Refused]:
        """Apply dead letters again (their progress passed long ago): the counters move."""
        self.prepare(rows.schema)
        rows = rows.append_column("_i", pa.array(np.arange(rows.num_rows), pa.int64()))
        with self.conn.transaction():  # one by one, in their order: a key may come twice
            refused = [r for i in range(rows.num_rows) for r in self._apply(rows.slice(i, 1))]
            ok = rows.num_rows - len(refused)
            self._progress(ok, -ok, None, None)
        return refused

    def _progress(self, delivered: int, dead: int, start: int | None, end: int | None) -> None:
        moved = self.conn.execute(sql.SQL(
            "UPDATE {} SET next_offset = coalesce(%s, next_offset), delivered = delivered + %s, "
            "dead_lettered = dead_lettered + %s, updated_at = now() "
            "WHERE sink = %s AND next_offset = coalesce(%s, next_offset)"
        ).format(self.progress), (end, delivered, dead, self.sink_id, start))  # fmt: skip
        if moved.rowcount != 1:
            raise Moved(f"the progress of {self.sink_id} is not at {start}")

    def _copied_in(self, rows: pa.Table) -> bool:
        """``COPY`` straight into the table, when its keys may all be new: half the work
        of the upsert. A key already there (a unique violation) or a refused value rolls
        the savepoint back, and the upsert does the batch; after a conflict, the next
        batches (1, 2, 4 ... up to 64 of them) go straight to the upsert."""
        if not (self.cfg.copy_new_keys and self._unique and rows.num_rows):
            return False
        if self._skip:
            self._skip -= 1
            return False
        try:
            with self.conn.transaction(), self.conn.cursor().copy(self.copy_in) as copy:
                copy.write(_csv(rows.drop_columns(["_i"])))  # under a savepoint
        except psycopg.errors.UniqueViolation:
            self._skip, self._wait = self._wait, min(64, self._wait * 2)
            return False
        except BAD_DATA:
            return False
        self._wait = 1
        return True

    def _has_unique_key(self) -> bool:
        """Whether an immediate, whole-table unique index covers exactly the key columns
        (without one, a ``COPY`` straight in would not notice a key already there)."""
        found = self.conn.execute(sql.SQL(
            "SELECT 1 FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique "
            "AND i.indimmediate AND i.indpred IS NULL AND i.indexprs IS NULL "
            "AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) "
            "     FROM unnest(i.indkey::int2[]) k JOIN pg_attribute a "
            "     ON a.attrelid = i.indrelid AND a.attnum = k) = %s::text[]"
        ), (self.table.as_string(self.conn), sorted(self.cfg.key))).fetchone()  # fmt: skip
        return found is not None

    def _apply(self, rows: pa.Table) -> list[Refused]:
        """Upsert ``rows``; those refused (``_i`` and why), found by halving."""
        try:
            with self.conn.transaction():  # a savepoint
                with self.conn.cursor().copy(self.copy) as copy:
                    copy.write(_csv(rows.drop_columns(["_i"])))
                self.conn.execute(self.upsert)
                self.conn.execute(sql.SQL("TRUNCATE {}").format(self.stage))
            return []
        except BAD_DATA as exc:
            if rows.num_rows == 1:
                return [(int(rows.column("_i")[0].as_py()), str(exc).strip())]
            half = rows.num_rows // 2
            return self._apply(rows.slice(0, half)) + self._apply(rows.slice(half))

    def close(self) -> None:
        self.conn.close()


class Moved(Exception):
    """The progress is not where this batch starts: read it again."""


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "timestamptz"
    return PG_TYPES.get(str(t), "text")


def _csv(rows: pa.Table) -> bytes:
    """CSV without header; NULL is an unquoted empty field, strings are quoted.
    Timestamps go without their zone (10x faster to write): the session is in UTC."""
    out = io.BytesIO()
    cols = []
    for c in rows.columns:
        if pa.types.is_timestamp(c.type) and c.type.tz is not None:
            c = c.cast(pa.timestamp(c.type.unit))
        elif pa.types.is_large_string(c.type):
            c = c.cast(pa.string())
        cols.append(c)
    pacsv.write_csv(pa.Table.from_arrays(cols, names=rows.column_names), out,
                    pacsv.WriteOptions(include_header=False))  # fmt: skip
    return out.getvalue()


def last_per_key(table: pa.Table, key: list[str]) -> pa.Table:
    """The last row of each key, in the order they came (by ``_i``)."""
    if not table.num_rows:
        return table
    if len(key) == 1 and len(pc.unique(table.column(key[0]))) == table.num_rows:
        return table  # every key once (the usual case): nothing to drop
    last = table.group_by(key, use_threads=False).aggregate([("_i", "max")])
    if last.num_rows == table.num_rows:
        return table
    wanted = pa.array(np.sort(last.column("_i_max").to_numpy()))
    return table.take(pc.index_in(wanted, value_set=table.column("_i")))


def _earlier(
    rows: pa.Table, key: list[str], now: list[Refused], refused: list[Refused]
) -> pa.Table:
    """The rows not yet refused of the keys whose row was just refused."""
    if not now:
        return rows.slice(0, 0)
    cols = [rows.column(k).to_pylist() for k in key]
    keys = list(zip(*cols, strict=True))
    bad = {keys[i] for i, _ in now}
    gone = {i for i, _ in refused}
    mask = [k in bad and i not in gone for i, k in enumerate(keys)]
    return rows.filter(pa.array(mask))
