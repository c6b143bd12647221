"""A ``PatternEngine``'s state as bytes: partial matches as JSON, retained rows as Arrow.

The header lists, per partition, its row counters and its open groups (first row,
best match so far, live threads as ``[pc, [[row, var], ...]]``); the rows each
partition keeps are one Arrow table with a ``__part`` column, and the partition keys
another, so keys of any type survive. Encoded with ``engine.state.pack``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from headwater.engine.patterns.nfa import Labels, labels_list
from headwater.engine.state import pack, unpack

if TYPE_CHECKING:
    from headwater.engine.patterns.engine import PatternEngine

VERSION = 1
PART = "__part"


def _labels(data: list[list[Any]] | None) -> Labels:
    labels: Labels = None
    for row, var in data or []:
        labels = (int(row), str(var), labels)
    return labels


def _dump_labels(labels: Labels) -> list[list[Any]]:
    return [[r, v] for r, v in labels_list(labels)]


def dump_state(engine: PatternEngine) -> bytes:
    parts = list(engine.parts.values())
    meta = {
        "version": VERSION,
        "counters": engine.counters,
        "parts": [
            {
                "base": p.base,
                "count": p.count,
                "next_start": p.next_start,
                "groups": [
                    [
                        g.start,
                        None if g.best is None else _dump_labels(g.best),
                        [[pc, _dump_labels(labels)] for pc, labels in g.threads],
                    ]
                    for g in p.groups
                ],
            }
            for p in parts
        ],
    }
    rows = [
        p.rows.append_column(PART, pa.array([i] * p.rows.num_rows, pa.int64()))
        for i, p in enumerate(parts)
    ]
    schema = engine.schema.append(pa.field(PART, pa.int64()))
    by = list(engine.spec.partition_by)
    keys = pa.Table.from_pylist(
        [dict(zip(by, p.key, strict=True)) for p in parts],
        schema=pa.schema([engine.schema.field(c) for c in by]),
    )
    tables = {"rows": pa.concat_tables(rows) if rows else schema.empty_table(), "keys": keys}
    return pack(meta, tables)


def load_state(engine: PatternEngine, data: bytes) -> None:
    from headwater.engine.patterns.batch import event_ms
    from headwater.engine.patterns.engine import Group, Part

    meta, tables = unpack(data)
    if meta.get("version") != VERSION:
        raise ValueError("pattern state of an unknown version; start from empty state")
    rows, keys = tables["rows"], tables["keys"]
    part_of = rows[PART].to_numpy()
    rows = rows.drop_columns([PART]).cast(engine.schema)
    by = list(engine.spec.partition_by)
    key_rows = keys.to_pylist() if by else [{} for _ in meta["parts"]]
    engine.parts = {}
    for i, (info, key) in enumerate(zip(meta["parts"], key_rows, strict=True)):
        mine = rows.filter(pa.array(part_of == i))
        key_tuple = tuple(key[c] for c in by)
        part = Part(
            key_tuple,
            mine,
            {c: mine[c].to_pylist() for c in engine.py_columns},
            [int(t) for t in event_ms(mine[engine.spec.order_by])],
            base=int(info["base"]),
            count=int(info["count"]),
            next_start=int(info["next_start"]),
        )
        for start, best, threads in info["groups"]:
            group = Group(int(start), [(int(pc), _labels(lab)) for pc, lab in threads])
            group.best = None if best is None else _labels(best)
            part.groups.append(group)
        engine.parts[key_tuple] = part
    engine.counters = {k: int(v) for k, v in meta["counters"].items()}
    engine.pending = []
    engine.touched = []
