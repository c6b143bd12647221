"""The ``ResultStore`` port: tables of stream rows, quarantined rows and pipeline output.

Tables are named per tenant. A *stream table* holds a stream's validated rows plus
system columns; a *result table* holds a pipeline's output, upserted by a key;
every write records the consumer's log offsets in the same transaction, so a restart
resumes exactly where the last committed write ended (no loss, no double count).

System columns of stream tables (all adapters):
    _offset BIGINT     log offset of the row (unique per stream)
    _received_ms BIGINT receive time, epoch ms
    _schema_version INT schema version the row was validated against
    _id_hash UBIGINT    64-bit hash of the event id (NULL when the stream has no id field)

Rules every adapter keeps (the contract suite checks them):

- Names: tenant and table names are 1-128 characters of ``[A-Za-z0-9_-]``; table
  names are unique per tenant ignoring case (SQL resolves them that way).
- Types: string, signed/unsigned integers, floats, bool, date32, binary and timestamps.
  Timestamps are stored at millisecond precision; ``read_rows`` and ``latest_per_key``
  return the table's own types (timestamps as ``timestamp[ms, tz=UTC]``), ``sql``
  answers carry the engine's types. A column's type may only widen (``widen_type``).
- Writes: rows may omit columns (NULL); an unknown column or a type that does not
  widen into the column's type is refused. Upserts replace whole rows; when one write
  holds several rows with the same key, the last one wins.
- Reads: ``_id_hash`` is internal and never returned by ``read_rows`` or
  ``latest_per_key``. Rows are ordered by the time column (NULL first when ascending,
  last when descending), then by ``_offset`` when the table has it, else by its key,
  else by insertion order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa

from headwater.errors import BadRequest, IncompatibleSchema
from headwater.query.spec import TIMESTAMP as TIMESTAMP
from headwater.query.spec import TRUNCATED_KEY as TRUNCATED_KEY
from headwater.query.spec import Order as Order
from headwater.query.spec import RowQuery as RowQuery

if TYPE_CHECKING:
    from headwater.query.limits import QueryBudget

HIDDEN_COLUMNS = frozenset({"_id_hash"})
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,127}$")


@dataclass(frozen=True, slots=True)
class RowPage:
    rows: pa.Table
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """One atomic commit of a consumer (the stream materializer or a pipeline).

    - ``appends``: table name -> rows to append.
    - ``upserts``: table name -> (rows, key columns); rows replace rows with equal keys.
      The key must be the key the table was created with.
    - ``offsets``: log topic -> next offset to read; stored under ``consumer``, merged
      with the topics it committed before.
    - ``state``: opaque snapshot of the consumer's state (e.g. Arrow IPC bytes), or None
      to leave it unchanged.
    - ``updates``: table name -> (rows, match columns); each row sets the other columns it
      carries on the stored rows whose match columns equal its own (any table, keyed or
      not). Rows that match nothing change nothing; applied after the appends and
      upserts, the last row per match winning. Applying one twice gives the same table.
    """

    consumer: str
    offsets: dict[str, int]
    appends: dict[str, pa.Table] = field(default_factory=dict)
    upserts: dict[str, tuple[pa.Table, list[str]]] = field(default_factory=dict)
    state: bytes | None = None
    updates: dict[str, tuple[pa.Table, list[str]]] = field(default_factory=dict)


class ResultStore(Protocol):
    def ensure_table(
        self, tenant: str, table: str, schema: pa.Schema, key: list[str] | None = None
    ) -> None:
        """Create the table if missing; add columns the schema gained (widening types).

        ``key`` makes it an upsert table; it cannot change later. Raises
        ``IncompatibleSchema`` for a type that does not widen.
        """
        ...

    def drop_table(self, tenant: str, table: str) -> None:
        """Drop the table and its rows; dropping a missing table does nothing."""
        ...

    def table_schema(self, tenant: str, table: str) -> pa.Schema | None: ...

    def commit(self, tenant: str, write: ResultWrite) -> None:
        """Apply every part of ``write`` in one transaction, or none of it."""
        ...

    def consumer_offsets(self, tenant: str, consumer: str) -> dict[str, int]: ...

    def consumer_state(self, tenant: str, consumer: str) -> bytes | None: ...

    def committed_offsets(self) -> dict[tuple[str, str], dict[str, int]]:
        """Every consumer's committed offsets: (tenant, consumer) -> {topic: offset}."""
        ...

    def read_rows(self, query: RowQuery) -> RowPage: ...

    def count_rows(self, query: RowQuery) -> int: ...

    def latest_per_key(
        self,
        tenant: str,
        table: str,
        key: list[str],
        time_column: str,
        n: int,
        filters: dict[str, Any] | None = None,
    ) -> pa.Table:
        """The latest ``n`` rows of each key by ``time_column``, ordered by key, newest first.

        ``filters`` keeps only the rows equal to them first, as ``RowQuery.filters`` does.
        """
        ...

    def id_hashes(self, tenant: str, table: str, since_ms: int | None) -> pa.Array:
        """Every stored ``_id_hash`` of a stream table (rows received at or after ``since_ms``)."""
        ...

    def delete_before(self, tenant: str, table: str, column: str, before_ms: int) -> int:
        """Delete the rows whose int64 ms ``column`` is below ``before_ms`` (retention).

        Returns how many went; rows with no value there stay.
        """
        ...

    def delete_in(self, tenant: str, table: str, column: str, values: pa.Array) -> int:
        """Delete the rows whose ``column`` holds one of ``values`` (erasure); how many went.

        ``values`` are cast to the column's type; a value that cannot be one matches nothing.
        """
        ...

    def rows_by_offset(
        self, tenant: str, table: str, start: int, end: int, max_rows: int
    ) -> pa.Table:
        """A stream table's rows with ``start <= _offset < end``, in offset order, at most
        ``max_rows``: what its log topic held there, for readers of rows the log no longer has.
        """
        ...

    def sql(
        self,
        tenant: str,
        query: str,
        *,
        max_rows: int,
        timeout_s: float,
        budget: QueryBudget | None = None,
    ) -> pa.Table:
        """Run a read-only SELECT that can see only ``tenant``'s tables, by their names.

        At most ``max_rows`` rows come back; when more existed the schema metadata
        holds ``TRUNCATED_KEY: b"true"`` (see ``is_truncated``). ``budget`` carries the
        query caps, parsing included; user SQL always comes with one (without it the
        SQL is the server's own: ``QueryLimits.for_server_sql(timeout_s)``).
        Raises ``QueryError`` (codes ``read_only``, ``forbidden_function``,
        ``unknown_table``, ``query_timeout``, ``syntax_error``, ``query_error``, and the
        caps' ``sql_too_long``, ``sql_too_deep``, ``query_too_large``,
        ``query_out_of_memory``, ``answer_too_large``).
        """
        ...

    def stored_bytes(self, tenant: str) -> int:
        """Bytes the tenant's tables take (on disk where the store is on disk)."""
        ...

    def close(self) -> None: ...


def require_column(table: str, schema: pa.Schema, column: str) -> str:
    if column not in schema.names:
        raise BadRequest(f"table {table!r} has no column {column!r}", code="bad_column")
    return column


def cast_values(values: pa.Array, to: pa.DataType) -> pa.Array:
    """``values`` as ``to``; those that cannot be one become null (and match nothing)."""
    if values.type == to:
        return values
    try:
        return values.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_cast_one(v, to) for v in values.to_pylist()], to)


def _cast_one(value: object, to: pa.DataType) -> object:
    try:
        return pa.array([value]).cast(to)[0].as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def is_truncated(table: pa.Table) -> bool:
    """Whether a ``sql`` answer was cut at ``max_rows``."""
    meta = table.schema.metadata or {}
    return meta.get(TRUNCATED_KEY) == b"true"


def check_name(kind: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise BadRequest(
            f"{kind} name {name!r} is not valid: use 1-128 letters, digits, '_' or '-'",
            code="invalid_name",
        )


# Types a store column may have, and how one type widens into another.


def normalize_schema(schema: pa.Schema) -> pa.Schema:
    """The schema as stored: timestamps at ms/UTC, large strings as strings; refuses others."""
    fields = []
    for f in schema:
        t = f.type
        if pa.types.is_timestamp(t):
            t = TIMESTAMP
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            t = pa.string()
        elif not _storable(t):
            raise BadRequest(
                f"column {f.name!r} has type {t}, which the store cannot hold",
                code="unsupported_type",
            )
        fields.append(pa.field(f.name, t))
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        raise BadRequest(f"duplicate column names in {names}", code="duplicate_column")
    return pa.schema(fields)


def _storable(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t)
        or pa.types.is_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_date32(t)
        or pa.types.is_binary(t)
        or pa.types.is_decimal128(t)  # integer sums are HUGEINT, decimal128(38, 0) in Arrow
    ) and not pa.types.is_float16(t)


def fits(a: pa.DataType, b: pa.DataType) -> bool:
    """Whether every value of type ``a`` can be stored in a column of type ``b``."""
    if a == b or pa.types.is_null(a):
        return True
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return True
    if pa.types.is_string(b):
        return bool(
            pa.types.is_large_string(a) or pa.types.is_string_view(a) or pa.types.is_integer(a)
            or pa.types.is_floating(a) or pa.types.is_boolean(a)
        )  # fmt: skip
    if pa.types.is_float64(b):
        return bool(pa.types.is_integer(a) or pa.types.is_floating(a))
    if pa.types.is_float32(b):
        return bool(pa.types.is_integer(a) and a.bit_width <= 16)
    if pa.types.is_signed_integer(b):
        return bool(pa.types.is_integer(a) and a.bit_width < b.bit_width)
    if pa.types.is_unsigned_integer(b):
        return bool(pa.types.is_unsigned_integer(a) and a.bit_width < b.bit_width)
    if pa.types.is_decimal128(b):
        whole = b.precision - b.scale  # digits left of the point
        if pa.types.is_integer(a):
            magnitude = 2 ** (a.bit_width - int(pa.types.is_signed_integer(a)))
            return bool(len(str(magnitude)) <= whole)  # int64: 2**63 has 19 digits
        return bool(
            pa.types.is_decimal(a) and a.scale <= b.scale and a.precision - a.scale <= whole
        )
    return False


def widen_type(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The column type that holds both ``old`` and ``new`` values, or None if neither does."""
    if fits(new, old):
        return old
    if fits(old, new):
        return new
    return None


def merge_schema(table: str, old: pa.Schema, new: pa.Schema, key: list[str]) -> pa.Schema:
    """``old`` plus the columns ``new`` adds, with widened types; refuses narrowing."""
    fields = {f.name: f for f in old}
    for f in new:
        if f.name not in fields:
            fields[f.name] = pa.field(f.name, f.type)
            continue
        have = fields[f.name].type
        wide = widen_type(have, f.type)
        if wide is None or (wide != have and f.name in key):
            raise IncompatibleSchema(
                f"column {f.name!r} of table {table!r} is {have}; it cannot become {f.type}",
                column=f.name,
            )
        fields[f.name] = pa.field(f.name, wide)
    return pa.schema(list(fields.values()))


def require_columns(table: str, schema: pa.Schema, names: list[str] | tuple[str, ...]) -> None:
    for name in names:
        if name not in schema.names:
            raise BadRequest(
                f"table {table!r} has no column {name!r}", code="unknown_column", column=name
            )


def check_rows(table: str, schema: pa.Schema, rows: pa.Table) -> None:
    """Refuse rows with a column the table lacks or a type that does not fit it."""
    for f in rows.schema:
        if f.name not in schema.names:
            raise BadRequest(
                f"table {table!r} has no column {f.name!r}; add it with ensure_table first",
                code="unknown_column",
                column=f.name,
            )
        want = schema.field(f.name).type
        if not fits(f.type, want):
            raise BadRequest(
                f"column {f.name!r} of table {table!r} is {want}; rows carry {f.type}",
                code="type_mismatch",
                column=f.name,
            )


def normalize_rows(rows: pa.Table) -> pa.Table:
    """Rows with their timestamps at the store's millisecond precision (finer units truncate)."""
    for i, f in enumerate(rows.schema):
        if pa.types.is_timestamp(f.type) and f.type != TIMESTAMP:
            rows = rows.set_column(i, f.name, rows.column(i).cast(TIMESTAMP, safe=False))
    return rows


def check_upsert(table: str, table_key: tuple[str, ...], rows: pa.Table, key: list[str]) -> None:
    """Refuse an upsert whose key is not the table's, or rows with a NULL key."""
    if tuple(key) != table_key or not key:
        raise BadRequest(
            f"upsert into {table!r} by {key}, but the table's key is {list(table_key)}",
            code="key_mismatch",
        )
    for k in key:
        if k not in rows.column_names or rows.column(k).null_count:
            raise BadRequest(
                f"upsert into {table!r}: key column {k!r} is missing or NULL", code="null_key"
            )


def check_update(table: str, schema: pa.Schema, rows: pa.Table, match: list[str]) -> None:
    """Refuse an update with no match columns, or matching on a column it does not carry."""
    if not match or any(c not in rows.column_names for c in match):
        raise BadRequest(
            f"update of {table!r} must carry its match columns {match}", code="bad_update"
        )
    require_columns(table, schema, match)
    check_rows(table, schema, rows)


def last_per_key(rows: pa.Table, key: list[str]) -> pa.Table:
    """Keep the last row of each key (rows later in a write replace earlier ones)."""
    if rows.num_rows < 2:
        return rows
    pos = "__headwater_pos"
    indexed = rows.select(key).append_column(pos, pa.array(range(rows.num_rows), pa.int64()))
    last = indexed.group_by(key, use_threads=False).aggregate([(pos, "max")])
    if last.num_rows == rows.num_rows:
        return rows
    return rows.take(last.column(f"{pos}_max").sort())
