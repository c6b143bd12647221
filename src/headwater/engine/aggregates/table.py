"""All of a pipeline's aggregates over one state table.

A *state table* has the grouping columns (``_k*`` keys plus e.g. ``_pane``) and the
state columns of every aggregate (``_s{i}_{j}``), one row per group. ``partial`` builds
one from pre-aggregation rows, ``merge`` combines several into one, ``final`` turns one
into the aggregate values ``_agg{i}``.

>>> from headwater.engine.plan import Aggregate
>>> agg = Aggregation([Aggregate("count_star", "_agg0"), Aggregate("max", "_agg1", ("_a0",))],
...                   {"_a0": pa.float64()})
>>> rows = pa.table({"_k0": ["a", "b", "a"], "_a0": [1.0, 2.0, 3.0]})
>>> by = [pa.field("_k0", pa.string())]
>>> state = agg.merge([agg.partial(rows, by), agg.partial(rows, by)], by)
>>> agg.final(state, keep=["_k0"]).to_pylist()
[{'_k0': 'a', '_agg0': 4, '_agg1': 3.0}, {'_k0': 'b', '_agg0': 2, '_agg1': 2.0}]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from headwater.engine.aggregates.groups import as_array, group_rows
from headwater.engine.aggregates.kernels import Kernel, make_kernel
from headwater.engine.aggregates.quantiles import Quantile, upgrade
from headwater.engine.plan import Aggregate


class Aggregation:
    def __init__(
        self, aggregates: Sequence[Aggregate], arg_types: Mapping[str, pa.DataType]
    ) -> None:
        self.aggregates = list(aggregates)
        self.kernels: list[Kernel] = [
            make_kernel(a.func, [arg_types[x] for x in a.args], a.param) for a in aggregates
        ]
        self.state_fields = [
            pa.field(f"_s{i}_{j}", t)
            for i, k in enumerate(self.kernels)
            for j, t in enumerate(k.state_types())
        ]
        self.output_fields = [
            pa.field(a.column, k.output_type)
            for a, k in zip(self.aggregates, self.kernels, strict=True)
        ]

    def schema(self, by: Sequence[pa.Field]) -> pa.Schema:
        return pa.schema([*by, *self.state_fields])

    def conform(self, state: pa.Table, schema: pa.Schema) -> pa.Table:
        """A restored state table in today's state types.

        State saved before integer sums became exact holds them as int64 (``sum``) or
        float64 (``avg``); both convert to ``decimal128(38, 0)`` without loss. Quantile
        state saved as log buckets becomes the buckets' values (``quantiles.upgrade``).
        """
        if state.schema.equals(schema):
            return state
        columns = {name: state[name] for name in state.column_names}
        for i, kernel in enumerate(self.kernels):
            prefix = f"_s{i}_"
            names = [n for n in columns if n.startswith(prefix)]
            if isinstance(kernel, Quantile) and len(names) != len(kernel.state_types()):
                old = [columns.pop(n) for n in sorted(names)]
                columns.update({f"{prefix}{j}": c for j, c in enumerate(upgrade(old))})
        table = pa.table([columns[f.name] for f in schema], names=schema.names)
        return table.cast(schema)

    def partial(self, rows: pa.Table, by: Sequence[pa.Field]) -> pa.Table:
        """Aggregate pre-aggregation rows (``_k*``, ``_a*`` and ``by``) into a state table."""
        if rows.num_rows == 0:
            return self.schema(by).empty_table()
        groups = group_rows([rows[f.name] for f in by], rows.num_rows)
        states: list[pa.Array] = []
        for a, kernel in zip(self.aggregates, self.kernels, strict=True):
            states.extend(kernel.partial([rows[x] for x in a.args], groups))
        return self._table(rows, by, groups.first, states)

    def merge(self, tables: Sequence[pa.Table], by: Sequence[pa.Field]) -> pa.Table:
        """Combine state tables into one row per group."""
        return self.merge_groups(tables, by)[0]

    def merge_groups(
        self, tables: Sequence[pa.Table], by: Sequence[pa.Field]
    ) -> tuple[pa.Table, np.ndarray]:
        """``merge``, and for each input row (tables in order) the output row it went to."""
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        if table.num_rows == 0:
            return self.schema(by).empty_table(), np.empty(0, dtype=np.int64)
        groups = group_rows([table[f.name] for f in by], table.num_rows)
        if groups.count == table.num_rows and len(tables) == 1:
            return table, np.arange(table.num_rows, dtype=np.int64)
        states: list[pa.Array] = []
        column = 0
        for kernel in self.kernels:
            width = len(kernel.state_types())
            parts = [table[f.name] for f in self.state_fields[column : column + width]]
            states.extend(kernel.merge(parts, groups))
            column += width
        return self._table(table, by, groups.first, states), groups.ids

    def final(self, state: pa.Table, keep: Sequence[str] = ()) -> pa.Table:
        """Aggregate values (``_agg*``) next to the ``keep`` columns of ``state``."""
        columns = [as_array(state[name]) for name in keep]
        column = 0
        for kernel in self.kernels:
            width = len(kernel.state_types())
            parts = [state[f.name] for f in self.state_fields[column : column + width]]
            columns.append(kernel.final(parts))
            column += width
        names = [*keep, *(f.name for f in self.output_fields)]
        return pa.table(columns, names=names)

    def _table(
        self, rows: pa.Table, by: Sequence[pa.Field], first: np.ndarray, states: list[pa.Array]
    ) -> pa.Table:
        index = pa.array(first, pa.int64())
        keys = [as_array(rows[f.name]).take(index) for f in by]
        return pa.Table.from_arrays([*keys, *states], schema=self.schema(by))
