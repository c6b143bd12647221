"""The vectorized side of the pattern engine: DuckDB over a batch of rows at once.

``local_flags`` computes every row-local DEFINE condition (see ``conditions``) for a
batch: the batch is tagged with each row's partition (``_p``) and place in it (``_i``),
preceded by as many retained rows of each partition as the largest ``PREV`` offset, so
``LAG(..) OVER (PARTITION BY _p ORDER BY _i)`` sees across batch boundaries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headwater.engine.operators.query import connect

ROWS = "__hw_pattern_rows"


def shared_connection() -> duckdb.DuckDBPyConnection:
    """A cursor on the engine's shared in-memory database (UTC, no external access)."""
    return connect()


def run_sql(con: duckdb.DuckDBPyConnection, table: pa.Table, sql: str) -> pa.Table:
    """``sql`` over ``table``, registered as ``ROWS``."""
    con.register(ROWS, table)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister(ROWS)


def local_flags(
    con: duckdb.DuckDBPyConnection,
    local: Mapping[str, str],
    lookback: int,
    history: Mapping[tuple[Any, ...], tuple[int, pa.Table]],
    rows: pa.Table,
    keys: list[tuple[Any, ...]],
) -> list[dict[str, bool]]:
    """Per row of ``rows``, each row-local condition's value (``local``: var -> SQL).

    ``history``: per partition already seen, its row count and its retained rows.
    """
    if not local:
        return [{} for _ in range(rows.num_rows)]
    ids: dict[tuple[Any, ...], int] = {}
    pid = np.array([ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    seen: dict[int, int] = {}
    parts: list[pa.Table] = []
    for key, p in ids.items():
        count, retained = history.get(key, (0, None))
        seen[p] = count
        if retained is not None and lookback:
            ctx = retained.slice(max(0, retained.num_rows - lookback))
            n = ctx.num_rows
            parts.append(_tag(ctx, np.full(n, p), np.arange(count - n, count)))
    seq = np.empty(len(keys), dtype=np.int64)
    for i, p in enumerate(pid.tolist()):
        seq[i] = seen[p]
        seen[p] += 1
    parts.append(_tag(rows, pid, seq))
    table = pa.concat_tables(parts)
    table = table.append_column("_pos", pa.array(np.arange(table.num_rows)))
    names = list(local)
    items = ", ".join(f"{sql} AS c{i}" for i, sql in enumerate(local.values()))
    out = run_sql(con, table, f"SELECT {items} FROM {ROWS} ORDER BY _pos")
    tail = out.slice(out.num_rows - rows.num_rows)
    cols = [tail.column(i).to_pylist() for i in range(len(names))]
    return [{v: bool(cols[j][i]) for j, v in enumerate(names)} for i in range(rows.num_rows)]


def _tag(rows: pa.Table, pid: npt.NDArray[np.int64], seq: npt.NDArray[np.int64]) -> pa.Table:
    rows = rows.append_column("_p", pa.array(np.asarray(pid, dtype=np.int64)))
    return rows.append_column("_i", pa.array(np.asarray(seq, dtype=np.int64)))


def event_ms(column: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.int64]:
    """Event times as int64 ms (timestamps of any unit, or integers taken as ms)."""
    if pa.types.is_timestamp(column.type):
        column = pc.cast(pc.cast(column, pa.timestamp("ms", tz=column.type.tz)), pa.int64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
