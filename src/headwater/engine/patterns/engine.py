"""``PatternEngine``: MATCH_RECOGNIZE over rows that arrive in event-time order.

Per partition, every row that may start a match opens a *group* of NFA threads (see
``nfa``); all groups advance together over each new row. A group is decided when no
thread that the SQL:2016 preferment order ranks above its best match is still alive;
groups are decided in order of their first row, and ``AFTER MATCH SKIP`` then says
which later groups may still produce a match (the others are dropped).

Bounds on state:

- ``within_ms``: a match spans less than this much event time (last row's time minus
  the first's); a group whose first row is older than that, by the next row's time or
  by ``expire(watermark)``, stops, so state is bounded by the event time it covers.
- ``max_partial_matches``: at most this many live threads per partition; past it the
  oldest groups stop (a match they already found still counts) and
  ``dropped_partial_matches`` counts them. A spec without ``within_ms`` must set it.

Rows are retained from the oldest open group's first row (less the largest ``PREV``
offset) on; nothing older is kept.

>>> import pyarrow as pa
>>> spec = PatternSpec("A B+ C", (("B", "B.price > PREV(B.price)"),
...     ("C", "C.price < PREV(C.price)")), (("top", "LAST(B.price)"), ("n", "COUNT(B.*)")),
...     partition_by=(), order_by="t", within_ms=60_000)
>>> engine = PatternEngine(spec, pa.schema([("t", pa.int64()), ("price", pa.int64())]))
>>> rows = pa.table({"t": [1, 2, 3, 4, 5], "price": [5, 6, 7, 8, 2]})
>>> engine.push(rows).to_pylist()
[{'top': 8, 'n': 3}]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import duckdb
import numpy as np
import pyarrow as pa

from headwater.engine.patterns import conditions as cond
from headwater.engine.patterns.batch import (
    ROWS,
    event_ms,
    local_flags,
    run_sql,
    shared_connection,
)
from headwater.engine.patterns.measures import (
    MATCH,
    ORD,
    VAR,
    measure_sql,
    measures_query,
)
from headwater.engine.patterns.nfa import Labels, closure, compile_pattern, labels_list, step
from headwater.engine.patterns.state import dump_state, load_state
from headwater.engine.patterns.syntax import parse_pattern, variables

SkipKind = Literal["past_last_row", "to_next_row", "to_first", "to_last"]
DEFAULT_MAX_PARTIAL = 100_000


@dataclass(frozen=True, slots=True)
class PatternSpec:
    """What to match. ``define`` and ``measures`` are ``(name, SQL)`` pairs; ``skip_to``
    names the variable of ``to_first`` / ``to_last``."""

    pattern: str
    define: tuple[tuple[str, str], ...]
    measures: tuple[tuple[str, str], ...]
    partition_by: tuple[str, ...]
    order_by: str
    skip: SkipKind = "past_last_row"
    skip_to: str | None = None
    within_ms: int | None = None
    max_partial_matches: int | None = None


@dataclass
class Group:
    start: int
    threads: list[tuple[int, Labels]]
    best: Labels = None


@dataclass
class Part:
    key: tuple[Any, ...]
    rows: pa.Table
    cols: dict[str, list[Any]]
    ts: list[int]
    base: int = 0
    count: int = 0
    next_start: int = 0
    groups: deque[Group] = field(default_factory=deque)


class PatternEngine:
    def __init__(
        self,
        spec: PatternSpec,
        schema: pa.Schema,
        connect: Callable[[], duckdb.DuckDBPyConnection] | None = None,
    ) -> None:
        self.spec, self.schema = spec, schema
        self.prog = compile_pattern(parse_pattern(spec.pattern))
        names = variables(parse_pattern(spec.pattern))
        self._check(spec, schema, set(names))
        self.cap = spec.max_partial_matches or DEFAULT_MAX_PARTIAL
        self.con = (connect or shared_connection)()
        columns = set(schema.names)
        self.local: dict[str, str] = {}
        self.python: dict[str, cond.Fn] = {}
        nodes = []
        for var, text in spec.define:
            what = f"DEFINE {var}"
            node = cond.parse_expr(text, what)
            cond.check_refs(node, set(names), columns, what)
            nodes.append(node)
            if cond.is_row_local(node, var.upper()):
                self.local[var.upper()] = cond.local_sql(node, what)
            else:
                self.python[var.upper()] = cond.compile_python(node, what)
        self.lookback = cond.max_prev(nodes)
        self.by_labels = bool(self.python)  # futures then depend on the rows matched so far
        self.py_columns = sorted(columns) if self.python else []
        measures = [(n, measure_sql(t, n, set(names), columns)) for n, t in spec.measures]
        self.query = measures_query(ROWS, list(spec.partition_by), measures)
        self.output_schema = self._run_measures(self._matched_schema().empty_table()).schema
        self.parts: dict[tuple[Any, ...], Part] = {}
        self.pending: list[tuple[Part, list[tuple[int, str]]]] = []
        self.touched: list[Part] = []  # partitions to trim once their matches are taken
        self.counters = {"matches": 0, "dropped_partial_matches": 0, "condition_errors": 0}

    @staticmethod
    def _check(spec: PatternSpec, schema: pa.Schema, names: set[str]) -> None:
        if spec.within_ms is None and spec.max_partial_matches is None:
            raise cond.ConditionError(
                "a pattern without WITHIN could hold partial matches forever: add "
                "WITHIN INTERVAL '...' or set a cap on partial matches"
            )
        for column in (*spec.partition_by, spec.order_by):
            if column not in schema.names:
                raise cond.ConditionError(f"the stream has no column {column!r}")
        t = schema.field(spec.order_by).type
        if not (pa.types.is_timestamp(t) or pa.types.is_integer(t)):
            raise cond.ConditionError(f"ORDER BY {spec.order_by} must be an event-time column")
        if spec.skip in ("to_first", "to_last") and (spec.skip_to or "").upper() not in names:
            raise cond.ConditionError(f"AFTER MATCH SKIP names no pattern variable {spec.skip_to}")
        for var, _ in spec.define:
            if var.upper() not in names:
                raise cond.ConditionError(f"DEFINE {var}: {var} is not in the PATTERN")

    # ---- feeding rows ----------------------------------------------------------------

    def push(self, rows: pa.Table) -> pa.Table:
        """Rows in event-time order per partition; returns the matches they decided."""
        if rows.num_rows:
            rows = rows.select(self.schema.names)
            keys = self._keys(rows)
            history = {k: (p.count, p.rows) for k in set(keys) if (p := self.parts.get(k))}
            flags = local_flags(self.con, self.local, self.lookback, history, rows, keys)
            order: dict[tuple[Any, ...], list[int]] = {}
            for i, k in enumerate(keys):
                order.setdefault(k, []).append(i)
            for key, idx in order.items():
                mine = rows.take(pa.array(idx, pa.int64()))
                self._feed(self._part(key), mine, [flags[i] for i in idx])
        return self._flush()

    def expire(self, watermark_ms: int) -> pa.Table:
        """No row at or before ``watermark_ms`` will come: stop groups WITHIN rules out."""
        if self.spec.within_ms is not None:
            for part in self.parts.values():
                for g in part.groups:
                    if (
                        g.threads
                        and part.ts[g.start - part.base] + self.spec.within_ms <= watermark_ms
                    ):
                        g.threads = []
                self._decide(part)
                self.touched.append(part)
        return self._flush()

    def finish(self) -> pa.Table:
        """End of input: every group stops and is decided."""
        for part in self.parts.values():
            for g in part.groups:
                g.threads = []
            self._decide(part)
            self.touched.append(part)
        return self._flush()

    def _keys(self, rows: pa.Table) -> list[tuple[Any, ...]]:
        if not self.spec.partition_by:
            return [()] * rows.num_rows
        return list(zip(*(rows[c].to_pylist() for c in self.spec.partition_by), strict=True))

    def _part(self, key: tuple[Any, ...]) -> Part:
        part = self.parts.get(key)
        if part is None:
            empty = self.schema.empty_table()
            part = Part(key, empty, {c: [] for c in self.py_columns}, [])
            self.parts[key] = part
        return part

    def _feed(self, part: Part, rows: pa.Table, flags: list[dict[str, bool]]) -> None:
        ts = event_ms(rows[self.spec.order_by])
        if (len(ts) and part.ts and ts[0] < part.ts[-1]) or bool(np.any(np.diff(ts) < 0)):
            raise ValueError("rows must arrive in event-time order within a partition")
        part.rows = pa.concat_tables([part.rows, rows]) if part.rows.num_rows else rows
        part.ts.extend(int(t) for t in ts)
        for c in self.py_columns:
            part.cols[c].extend(rows[c].to_pylist())
        for j in range(rows.num_rows):
            part.count += 1
            self._row(part, part.count - 1, flags[j])
        self.touched.append(part)

    def _row(self, part: Part, r: int, flags: dict[str, bool]) -> None:
        t, within = part.ts[r - part.base], self.spec.within_ms
        if within is not None:
            for g in part.groups:
                if g.threads and t - part.ts[g.start - part.base] >= within:
                    g.threads = []
        if r >= part.next_start:
            threads: list[tuple[int, Labels]] = []
            closure(self.prog, 0, None, threads, {}, self.by_labels)
            part.groups.append(Group(r, threads))

        def accepts(var: str, labels: Labels, row: int) -> bool:
            if var in flags:
                return flags[var]
            fn = self.python.get(var)
            return True if fn is None else self._python(fn, part, row, var, labels)

        for g in part.groups:
            if g.threads:
                g.threads = step(self.prog, g.threads, r, accepts, self.by_labels)
                self._settle(g)
        self._bound(part)
        self._decide(part)

    def _python(self, fn: cond.Fn, part: Part, row: int, var: str, labels: Labels) -> bool:
        try:
            return fn(cond.Context(part.cols, part.base, row, var, labels)) is True
        except (TypeError, ValueError, ArithmeticError):
            self.counters["condition_errors"] += 1
            return False

    def _settle(self, g: Group) -> None:
        for i, (pc_, labels) in enumerate(g.threads):
            if self.prog[pc_][0] == "match":  # preferred over every thread below it
                g.best, g.threads = labels, g.threads[:i]
                return

    def _bound(self, part: Part) -> None:
        live = sum(len(g.threads) for g in part.groups)
        for g in part.groups:
            if live <= self.cap:
                return
            if g.threads:
                live -= len(g.threads)
                self.counters["dropped_partial_matches"] += len(g.threads)
                g.threads = []

    def _decide(self, part: Part) -> None:
        while part.groups and not part.groups[0].threads:
            g = part.groups.popleft()
            if g.best is None:
                continue
            matched = labels_list(g.best)
            self._emit(part, matched)
            part.next_start = max(part.next_start, self._skip(g.start, matched))
            while part.groups and part.groups[0].start < part.next_start:
                part.groups.popleft()

    def _skip(self, start: int, matched: list[tuple[int, str]]) -> int:
        kind = self.spec.skip
        if kind == "past_last_row":
            return matched[-1][0] + 1
        rows = [r for r, v in matched if v == (self.spec.skip_to or "").upper()]
        target = (rows[0] if kind == "to_first" else rows[-1]) if rows else start
        return target if kind != "to_next_row" and target > start else start + 1

    def _emit(self, part: Part, matched: list[tuple[int, str]]) -> None:
        self.pending.append((part, matched))  # rows are taken, per partition, in _flush
        self.counters["matches"] += 1

    def _trim(self, part: Part) -> None:
        first = part.groups[0].start if part.groups else part.count
        keep = max(part.base, first - self.lookback)
        drop = keep - part.base
        if drop and (drop >= 1024 or drop * 2 >= len(part.ts)):
            part.rows = part.rows.slice(drop)
            part.ts = part.ts[drop:]
            part.cols = {c: v[drop:] for c, v in part.cols.items()}
            part.base = keep

    # ---- measures ----------------------------------------------------------------------

    def _matched_schema(self) -> pa.Schema:
        extra = [pa.field(VAR, pa.string()), pa.field(ORD, pa.int64()), pa.field(MATCH, pa.int64())]
        return pa.schema([*self.schema, *extra])

    def _run_measures(self, matched: pa.Table) -> pa.Table:
        return run_sql(self.con, matched, self.query)

    def _flush(self) -> pa.Table:
        """Measures of the matches decided since the last flush, in the order decided;
        then rows no open match needs are let go."""
        pending, self.pending = self.pending, []
        tables = []
        by_part: dict[int, list[int]] = {}
        for m, (part, _) in enumerate(pending):
            by_part.setdefault(id(part), []).append(m)
        for ms in by_part.values():
            part = pending[ms[0]][0]
            matched = [pending[m][1] for m in ms]
            rows = np.array([r for one in matched for r, _ in one], dtype=np.int64) - part.base
            taken = part.rows.take(pa.array(rows))
            sizes = [len(one) for one in matched]
            extra = {
                VAR: pa.array([v for one in matched for _, v in one], pa.string()),
                ORD: pa.array(np.concatenate([np.arange(n) for n in sizes]), pa.int64()),
                MATCH: pa.array(np.repeat(np.array(ms, dtype=np.int64), sizes), pa.int64()),
            }
            for name, values in extra.items():
                taken = taken.append_column(name, values)
            tables.append(taken)
        for part in self.touched:
            if not part.groups and not self.lookback:  # nothing to remember for this key
                self.parts.pop(part.key, None)
            else:
                self._trim(part)
        self.touched = []
        if not tables:
            return self.output_schema.empty_table()
        return self._run_measures(pa.concat_tables(tables)).cast(self.output_schema)

    # ---- state -------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Partial matches, retained rows and counters, as bytes (see ``state``)."""
        return dump_state(self)

    def restore(self, data: bytes) -> None:
        load_state(self, data)

    def status(self) -> dict[str, int]:
        return {
            "partitions": len(self.parts),
            "partial_matches": sum(len(g.threads) for p in self.parts.values() for g in p.groups),
            "retained_rows": sum(len(p.ts) for p in self.parts.values()),
            **self.counters,
        }
