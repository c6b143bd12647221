"""Running a pipeline's row expressions over a micro-batch: one DuckDB query per batch.

``BatchQuery`` registers the batch (and the reference tables it joins, fetched anew
for every batch so updates are seen on the next one) and runs one SELECT over them.
If a row makes an expression fail (a cast, a bad regex...), the query is retried on
halves of the batch until the failing rows are isolated: they are reported with
DuckDB's message, and every other row still gets its result. A query that fails even
on no rows is a mistake in the pipeline, not in the data, and is raised.

``ColumnPick`` is the same contract without DuckDB, for projections that only pick
and rename columns (the common case of ``GROUP BY device_id`` over ``temperature``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headwater.engine import udfs
from headwater.engine.connection import Config, connect_duckdb
from headwater.errors import QueryError, UnsupportedSQL

BATCH = "__hw_batch"
ROW = "_hw_row"
TableSource = Callable[[], Mapping[str, pa.Table]]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def normalize_type(t: pa.DataType) -> pa.DataType:
    """Engine types: timestamps in ms (UTC when zoned), plain strings and binaries."""
    if pa.types.is_timestamp(t):
        return pa.timestamp("ms", tz="UTC" if t.tz else None)
    if t in (pa.string_view(), pa.large_string()):
        return pa.string()
    if t in (pa.binary_view(), pa.large_binary()):
        return pa.binary()
    return t


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, normalize_type(f.type)) for f in schema])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast to ``schema`` (same column names); timestamps may drop sub-millisecond digits."""
    if table.schema.equals(schema):
        return table
    if table.schema.names != schema.names:
        table = table.select(schema.names)
    return table.cast(schema, safe=False)


_ENGINE_DB: duckdb.DuckDBPyConnection | None = None
_ENGINE_LOCK = threading.Lock()


def connect() -> duckdb.DuckDBPyConnection:
    """A connection that can read registered Arrow tables and nothing else.

    Every pipeline's queries share one in-memory DuckDB database, each on a connection of
    its own (registrations are per connection): a database costs eight threads, a
    connection none, so pipelines no longer cost threads by the query.
    """
    global _ENGINE_DB
    with _ENGINE_LOCK:
        if _ENGINE_DB is None:
            config: Config = {
                "enable_external_access": False,
                "autoload_known_extensions": False,
                "autoinstall_known_extensions": False,
                "threads": 1,
            }
            _ENGINE_DB = connect_duckdb(config=config)
        if udfs.pending():  # Python functions registered since: pipelines may call them
            udfs.install(_ENGINE_DB)
        return _ENGINE_DB.cursor()


@dataclass(frozen=True, slots=True)
class QueryResult:
    rows: pa.Table
    failed: npt.NDArray[np.int64]  # indices of batch rows whose expressions failed
    messages: list[str]


class BatchQuery:
    def __init__(
        self, sql: str, input_schema: pa.Schema, tables: TableSource | None = None, label: str = ""
    ) -> None:
        self.sql = sql
        self.tables: TableSource = tables or dict
        self.label = label
        self.con = connect()
        empty = self._query(input_schema.empty_table(), self.tables())
        if empty.num_rows:
            raise UnsupportedSQL(
                f"{label}: an aggregate function is used as a row expression; "
                "aggregate in a windowed GROUP BY, with one of the supported aggregates",
                construct="aggregate function",
            )
        self.schema = normalize_schema(empty.schema)

    def _query(self, batch: pa.Table, tables: Mapping[str, pa.Table]) -> pa.Table:
        self.con.register(BATCH, batch)
        for name, table in tables.items():
            self.con.register(name, table)
        try:
            return self.con.sql(self.sql).to_arrow_table()
        except duckdb.Error:
            raise
        except Exception as exc:  # a conversion error surfacing from Arrow
            raise duckdb.Error(str(exc)) from exc
        finally:
            self.con.unregister(BATCH)
            for name in tables:
                self.con.unregister(name)

    def run(self, batch: pa.Table) -> QueryResult:
        tables = self.tables()
        try:
            return QueryResult(self._cast(self._query(batch, tables)), _none(), [])
        except duckdb.Error as exc:
            try:
                self._query(batch.slice(0, 0), tables)
            except duckdb.Error:
                raise QueryError(f"{self.label}: {exc}") from exc
        return self._bisect(batch, tables)

    def _cast(self, table: pa.Table) -> pa.Table:
        return conform(table, self.schema)

    def _bisect(self, batch: pa.Table, tables: Mapping[str, pa.Table]) -> QueryResult:
        good: list[pa.Table] = []
        failed: list[int] = []
        messages: list[str] = []
        stack = [(0, batch.num_rows)]
        while stack:
            start, length = stack.pop()
            try:
                good.append(self._cast(self._query(batch.slice(start, length), tables)))
            except duckdb.Error as exc:
                if length == 1:
                    failed.append(start)
                    messages.append(str(exc))
                else:
                    half = length // 2
                    stack.append((start + half, length - half))
                    stack.append((start, half))
        rows = pa.concat_tables(good) if good else self.schema.empty_table()
        return QueryResult(rows, np.asarray(failed, dtype=np.int64), messages)


class ColumnPick:
    """Pick and rename columns: ``[(output name, input column), ...]``; never fails."""

    def __init__(self, columns: Sequence[tuple[str, str]], input_schema: pa.Schema) -> None:
        self.columns = list(columns)
        self.schema = pa.schema(
            [pa.field(out, normalize_type(input_schema.field(src).type)) for out, src in columns]
        )

    def run(self, batch: pa.Table) -> QueryResult:
        table = pa.table(
            [batch[src] for _, src in self.columns], names=[o for o, _ in self.columns]
        )
        return QueryResult(conform(table, self.schema), _none(), [])


def _none() -> npt.NDArray[np.int64]:
    return np.empty(0, dtype=np.int64)
