"""Splitting an aggregating SELECT into pre-aggregation columns, aggregates and the
projection over their results.

``SELECT device_id, window_start, round(avg(t), 1) AS a ... GROUP BY device_id, ...``
becomes keys ``_k0 = device_id``, an argument ``_a0 = t``, an aggregate
``_agg0 = avg(_a0)`` and the projection ``_k0 AS device_id, window_start,
round(_agg0, 1) AS a``. Every GROUP BY key must be selected as is (it keys the result
rows), and every other selected column must sit inside an aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from headwater.engine.plan import WINDOW_END, WINDOW_START, Aggregate, Column, WindowSpec
from headwater.engine.sql.calls import is_aggregate, read_call
from headwater.engine.sql.text import node_offset, unsupported, where

WINDOW_COLUMNS = (WINDOW_START, WINDOW_END)


@dataclass(frozen=True, slots=True)
class Grouping:
    keys: tuple[Column, ...]
    pre: tuple[Column, ...]
    aggregates: tuple[Aggregate, ...]
    projection: tuple[Column, ...]
    having: str | None


@dataclass
class _Builder:
    sql: str
    alias: str
    args: dict[str, Column] = field(default_factory=dict)
    aggregates: dict[str, Aggregate] = field(default_factory=dict)
    keys: dict[str, Column] = field(default_factory=dict)

    def canonical(self, node: exp.Expr) -> str:
        """SQL of a node with the stream's own qualifier dropped (``r.x`` == ``x``)."""

        def strip(n: exp.Expr) -> exp.Expr:
            if isinstance(n, exp.Column) and n.table == self.alias:
                n = n.copy()
                n.set("table", None)
            return n

        return node.transform(strip).sql(dialect="duckdb")

    def source_of(self, node: exp.Expr) -> str | None:
        if isinstance(node, exp.Column) and node.table in ("", self.alias):
            return str(node.name)
        return None

    def arg(self, node: exp.Expr, hashed: bool) -> str:
        text = self.canonical(node)
        source = None if hashed else self.source_of(node)
        if hashed:
            text = f"CASE WHEN ({text}) IS NULL THEN NULL ELSE hash({text}) END"
        if text not in self.args:
            self.args[text] = Column(f"_a{len(self.args)}", text, source)
        return self.args[text].name

    def aggregate(self, node: exp.Expr) -> exp.Expr:
        text = node.sql(dialect="duckdb")
        if text not in self.aggregates:
            call = read_call(node, self.sql)
            hashed = call.func == "approx_count_distinct"
            args = tuple(self.arg(a, hashed) for a in call.args)
            name = f"_agg{len(self.aggregates)}"
            pos = where(self.sql, node_offset(node))
            self.aggregates[text] = Aggregate(call.func, name, args, call.param, text, pos)
        return exp.column(self.aggregates[text].column)

    def key(self, node: exp.Expr) -> None:
        text = self.canonical(node)
        if text not in self.keys:
            self.keys[text] = Column(f"_k{len(self.keys)}", text, self.source_of(node))

    def rewrite(self, node: exp.Expr) -> exp.Expr:
        """Aggregates -> ``_agg*``, keys -> ``_k*``; refuse any other input column."""

        def swap(n: exp.Expr) -> exp.Expr:
            if is_aggregate(n):
                return self.aggregate(n)
            if _is_window_column(n):
                return exp.column(n.name.lower())
            key = self.keys.get(self.canonical(n)) if not isinstance(n, exp.Literal) else None
            return exp.column(key.name) if key is not None else n

        out = node.transform(swap)
        internal = {c.column for c in self.aggregates.values()} | {
            k.name for k in self.keys.values()
        }
        for col in out.find_all(exp.Column):
            if col.name not in internal and col.name not in WINDOW_COLUMNS:
                raise unsupported(
                    f"column {col.sql(dialect='duckdb')} outside GROUP BY and aggregates",
                    self.sql,
                    node_offset(col),
                    "add it to GROUP BY or wrap it in an aggregate",
                )
        if out.find(exp.Star) is not None:
            raise unsupported("SELECT * with GROUP BY", self.sql, node_offset(node), "name columns")
        return out


def read_grouping(select: exp.Select, sql: str, alias: str, window: WindowSpec | None) -> Grouping:
    b = _Builder(sql, alias)
    items = list(select.expressions)
    windowed = _read_keys(select, items, b)
    if window is not None and not windowed:
        raise unsupported(
            "GROUP BY without window_start, window_end",
            sql,
            node_offset(select.args.get("group") or select),
            "a windowed source groups by its windows: GROUP BY ..., window_start, window_end",
        )
    projection = tuple(_output(item, b) for item in items)
    _check_names(projection, sql, select)
    having_node = select.args.get("having")
    having = b.rewrite(having_node.this).sql(dialect="duckdb") if having_node is not None else None
    _check_keys(projection, b, sql, window, select)
    pre = (*b.keys.values(), *b.args.values())
    return Grouping(tuple(b.keys.values()), pre, tuple(b.aggregates.values()), projection, having)


def _read_keys(select: exp.Select, items: list[exp.Expr], b: _Builder) -> bool:
    """Record the GROUP BY keys; return whether the windows are among them."""
    group = select.args.get("group")
    windowed = False
    if group is None:
        return False
    if group.args.get("all"):
        nodes = [_unalias(i) for i in items if not _has_aggregate(i)]
    else:
        nodes = [_resolve(g, items, b.sql) for g in group.expressions]
    for node in nodes:
        if _is_window_column(node):
            windowed = True
        elif _has_aggregate(node):
            raise unsupported("aggregate in GROUP BY", b.sql, node_offset(node), "group by columns")
        else:
            b.key(node)
    return windowed


def _resolve(g: exp.Expr, items: list[exp.Expr], sql: str) -> exp.Expr:
    """``GROUP BY 1`` and ``GROUP BY alias`` name a SELECT item."""
    if isinstance(g, exp.Literal) and not g.is_string:
        n = int(g.name)
        if not 1 <= n <= len(items):
            raise unsupported(f"GROUP BY {n}", sql, node_offset(g), "no such SELECT item")
        return _unalias(items[n - 1])
    if isinstance(g, exp.Column) and not g.table:
        for item in items:
            if isinstance(item, exp.Alias) and item.alias == g.name:
                inner: exp.Expr = item.this
                if not (isinstance(inner, exp.Column) and inner.name == g.name):
                    return inner
    return g


def _output(item: exp.Expr, b: _Builder) -> Column:
    node = _unalias(item)
    if isinstance(item, exp.Alias):
        name = item.alias
    elif isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
        name = node.name
    else:
        name = node.sql(dialect="duckdb")
    out = b.rewrite(node)
    source = str(out.name) if isinstance(out, exp.Column) else None
    return Column(name, out.sql(dialect="duckdb"), source)


def _check_names(projection: tuple[Column, ...], sql: str, select: exp.Select) -> None:
    seen: set[str] = set()
    for col in projection:
        if col.name.lower() in seen:
            raise unsupported(
                f"two result columns named {col.name!r}", sql, node_offset(select), "alias one"
            )
        seen.add(col.name.lower())


def _check_keys(
    projection: tuple[Column, ...],
    b: _Builder,
    sql: str,
    window: WindowSpec | None,
    select: exp.Select,
) -> None:
    selected = {c.source for c in projection if c.source}
    for text, key in b.keys.items():
        if key.name not in selected:
            raise unsupported(
                f"GROUP BY key {text} missing from SELECT",
                sql,
                node_offset(select.args["group"]),
                "select every key as is: the keys identify each result row",
            )
    if window is not None and not selected & set(WINDOW_COLUMNS):
        raise unsupported(
            "windowed SELECT without window_start",
            sql,
            node_offset(select),
            "select window_start (or window_end): it identifies each result row",
        )


def _unalias(item: exp.Expr) -> exp.Expr:
    return item.this if isinstance(item, exp.Alias) else item


def _has_aggregate(node: exp.Expr) -> bool:
    return any(is_aggregate(n) for n in node.walk())


def _is_window_column(node: exp.Expr) -> bool:
    return isinstance(node, exp.Column) and str(node.name).lower() in WINDOW_COLUMNS
