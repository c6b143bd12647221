"""Shared by the aggregating operators: picking groups, adding window columns, and the
final projection of aggregated rows into result rows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array, group_rows
from headwater.engine.compile import Compiled
from headwater.engine.operators.base import ERROR_COLUMNS
from headwater.engine.plan import WINDOW_END, WINDOW_START, WINDOW_TYPE


def select_keys(table: pa.Table, probe: pa.Table, names: Sequence[str]) -> pa.Table:
    """Rows of ``table`` whose key tuple (``names``) appears in ``probe``."""
    if not names or table.num_rows == 0:
        return table
    n = table.num_rows
    both = [pa.concat_arrays([as_array(table[c]), as_array(probe[c])]) for c in names]
    ids = group_rows(both).ids
    return table.filter(pa.array(np.isin(ids[:n], ids[n:])))


def with_window(
    table: pa.Table, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64], at: int
) -> pa.Table:
    """Insert ``window_start`` and ``window_end`` (epoch ms) as columns ``at``, ``at + 1``."""
    table = table.add_column(at, pa.field(WINDOW_START, WINDOW_TYPE), _times(starts))
    return table.add_column(at + 1, pa.field(WINDOW_END, WINDOW_TYPE), _times(ends))


def _times(values: npt.NDArray[np.int64]) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.int64), pa.int64()).cast(WINDOW_TYPE)


def project(
    compiled: Compiled, aggregated: pa.Table | None
) -> tuple[pa.Table | None, pa.Table | None]:
    """Result rows from aggregated rows; rows whose projection fails become error rows."""
    if aggregated is None or aggregated.num_rows == 0 or compiled.post is None:
        return None, None
    result = compiled.post.run(aggregated)
    errors = None
    if len(result.failed):
        names = {c.source: c.name for c in compiled.plan.projection if c.source}
        messages = [
            f"result row {_describe(aggregated, int(i), names)} failed: {m}"
            for i, m in zip(result.failed, result.messages, strict=True)
        ]
        schema = compiled.input_schema
        columns = [pa.nulls(len(messages), f.type) for f in schema]
        columns.append(pa.array(messages, pa.string()))
        errors = pa.Table.from_arrays(columns, schema=pa.schema([*schema, *ERROR_COLUMNS]))
    return result.rows, errors


def _describe(table: pa.Table, i: int, names: dict[str, str]) -> str:
    row = table.slice(i, 1).to_pylist()[0]
    shown = {names.get(k, k): v for k, v in row.items() if not k.startswith("_agg")}
    return ", ".join(f"{k}={v!s}" for k, v in shown.items())
