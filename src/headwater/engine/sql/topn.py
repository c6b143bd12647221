"""Window Top-N in pipeline SQL: ``ROW_NUMBER() OVER (PARTITION BY window_start ...)``.

Two forms are read, both over a windowed aggregate (TUMBLE or HOP, ``emit = 'final'``):

- a subquery ranked in its SELECT list, filtered outside:
  ``SELECT * FROM (SELECT ..., ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY
  max(t) DESC) AS rn FROM TUMBLE(...) GROUP BY ...) WHERE rn <= 3``;
- ``QUALIFY`` on the aggregate itself: ``... GROUP BY ... QUALIFY rn <= 3`` (or
  ``QUALIFY ROW_NUMBER() OVER (...) <= 3``).

The ranking call is taken out before the aggregate is planned: its PARTITION BY and
ORDER BY expressions become hidden result columns (``_tn_p{i}``, ``_tn_o{i}``), the rank
column a placeholder, and the ranking runs over each closed window's rows (see
``headwater.engine.operators.topn``).

>>> import sqlglot
>>> select = sqlglot.parse_one("SELECT k, window_start, max(v) AS hi, ROW_NUMBER() OVER "
...     "(PARTITION BY window_start ORDER BY max(v) DESC) AS rn FROM TUMBLE(s, ts, "
...     "INTERVAL '1 minute') GROUP BY k, window_start, window_end QUALIFY rn <= 2",
...     dialect="duckdb")
>>> inner, top = extract_top_n(select, "")
>>> top.rank, top.partition, top.order, top.where
('rn', ('"_tn_p0"',), ('"_tn_o0" DESC',), 'rn <= 2')
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

import sqlglot
from sqlglot import exp

from headwater.engine.plan import WINDOW_END, WINDOW_START, Plan, TopN
from headwater.engine.sql.text import node_offset, unsupported

RANKS: dict[type[exp.Expr], Literal["row_number", "rank", "dense_rank"]] = {
    exp.RowNumber: "row_number",
    exp.Rank: "rank",
    exp.DenseRank: "dense_rank",
}
HIDDEN_RANK = "_tn_rank"
FORM = "ROW_NUMBER() OVER (PARTITION BY window_start ... ORDER BY ...) over a windowed GROUP BY"
OUTER = ("group", "having", "joins", "qualify", "order", "limit", "distinct")


def is_rank(node: exp.Expr) -> bool:
    return isinstance(node, exp.Window) and type(node.this) in RANKS


def ranks_subquery(select: exp.Select) -> bool:
    """Whether FROM is a subquery that ranks (the Top-N form), not a pipeline to nest."""
    from_ = select.args.get("from_")
    sub = from_.this if from_ is not None else None
    return isinstance(sub, exp.Subquery) and any(is_rank(w) for w in sub.find_all(exp.Window))


def extract_top_n(select: exp.Select, sql: str) -> tuple[exp.Select, TopN | None]:
    """The aggregate to plan and the ranking over its result rows, if the SELECT ranks."""
    from_ = select.args.get("from_")
    sub = from_.this if from_ is not None else None
    if isinstance(sub, exp.Subquery) and isinstance(sub.this, exp.Select):
        if not any(is_rank(w) for w in sub.this.find_all(exp.Window)):
            return select, None
        return _subquery_form(select, sub, sql)
    qualify = select.args.get("qualify")
    ranked = [w for item in select.expressions for w in item.find_all(exp.Window) if is_rank(w)]
    if qualify is not None:
        ranked += [w for w in qualify.find_all(exp.Window) if is_rank(w)]
    if not ranked:
        return select, None
    if qualify is None:
        raise unsupported(
            f"{ranked[0].this.sql(dialect='duckdb')} OVER without a filter on it", sql,
            node_offset(ranked[0]), "keep the top rows: QUALIFY rn <= N, or wrap in a subquery",
        )  # fmt: skip
    return _qualify_form(select, qualify, sql)


def _subquery_form(outer: exp.Select, sub: exp.Subquery, sql: str) -> tuple[exp.Select, TopN]:
    for key in OUTER:
        if outer.args.get(key):
            raise unsupported(
                f"{key.upper()} around a Top-N subquery", sql, node_offset(outer),
                "select and filter the ranked rows (WHERE rn <= N); nothing else around them",
            )  # fmt: skip
    where_ = outer.args.get("where")
    around = [*outer.expressions, *([where_] if where_ is not None else [])]
    for node in (n for item in around for n in item.walk()):
        if isinstance(node, exp.Window | exp.Subquery | exp.Select):
            raise unsupported(
                "a window function or subquery around a Top-N subquery", sql, node_offset(node),
                FORM,
            )  # fmt: skip
    inner = sub.this.copy()
    if inner.args.get("qualify") is not None:
        raise unsupported("QUALIFY inside a Top-N subquery", sql, node_offset(inner), FORM)
    items = [i for i in inner.expressions if is_rank(_unalias(i))]
    if len(items) != 1 or not isinstance(items[0], exp.Alias):
        raise unsupported("Top-N with other than one named ranking", sql, node_offset(sub), FORM)
    if where_ is None:
        raise unsupported(
            "a Top-N subquery without WHERE", sql, node_offset(outer), "WHERE rn <= N"
        )
    rank = str(items[0].alias)
    call = items[0].this
    items[0].replace(_placeholder(rank))
    select_sql = ", ".join(e.sql(dialect="duckdb") for e in outer.expressions)
    where_sql = where_.this.sql(dialect="duckdb")
    top = _ranking(inner, call, rank, select_sql, where_sql, sql, list(outer.expressions))
    return inner, replace(top, alias=sub.alias or "_tn")


def _qualify_form(select: exp.Select, qualify: exp.Qualify, sql: str) -> tuple[exp.Select, TopN]:
    select = select.copy()
    cond = select.args["qualify"].this
    select.set("qualify", None)
    items = [i for i in select.expressions if is_rank(_unalias(i))]
    inline = [w for w in cond.find_all(exp.Window) if is_rank(w)]
    if len(items) + len(inline) != 1:
        raise unsupported("Top-N with more than one ranking", sql, node_offset(qualify), FORM)
    if items:
        if not isinstance(items[0], exp.Alias):
            raise unsupported("an unnamed ranking", sql, node_offset(items[0]), "name it: AS rn")
        rank, call, select_sql = str(items[0].alias), items[0].this, "*"
        items[0].replace(_placeholder(rank))
    else:
        rank, call, select_sql = HIDDEN_RANK, inline[0], f'* EXCLUDE ("{HIDDEN_RANK}")'
        call.replace(exp.column(HIDDEN_RANK, quoted=True))
        select.append("expressions", _placeholder(rank))
    outer: list[exp.Expr] | None = None if items else []  # the hidden rank is not in the result
    where_sql = cond.sql(dialect="duckdb")
    return select, _ranking(select, call, rank, select_sql, where_sql, sql, outer)


def _ranking(
    inner: exp.Select, call: exp.Window, rank: str, select_sql: str, where_sql: str, sql: str,
    outer: list[exp.Expr] | None = None,
) -> TopN:  # fmt: skip
    at = node_offset(call)
    if call.args.get("spec") is not None:
        raise unsupported("a window frame on a ranking function", sql, at, FORM)
    partition = list(call.args.get("partition_by") or [])
    windowed = any(isinstance(p, exp.Column) and p.name in (WINDOW_START, WINDOW_END)
                   for p in partition)  # fmt: skip
    if not windowed:
        raise unsupported(
            "Top-N without window_start in PARTITION BY", sql, at,
            "rank within each window: PARTITION BY window_start [, key ...]",
        )  # fmt: skip
    order = call.args.get("order")
    if order is None:
        raise unsupported("Top-N without ORDER BY", sql, at, FORM)
    key = _result_key(inner, partition, rank, outer)
    at = next(i for i, p in enumerate(partition)
              if isinstance(p, exp.Column) and p.name in (WINDOW_START, WINDOW_END))  # fmt: skip
    hidden, parts, orders, group = [], [], [], []
    for i, g in enumerate(_group_keys(inner)):
        hidden.append(f"_tn_k{i}")
        group.append(f"_tn_k{i}")
        inner.append("expressions", exp.alias_(g.copy(), f"_tn_k{i}"))
    for i, p in enumerate(partition):
        hidden.append(f"_tn_p{i}")
        parts.append(f'"_tn_p{i}"')
        inner.append("expressions", exp.alias_(p.copy(), f"_tn_p{i}"))
    for i, o in enumerate(order.expressions):
        hidden.append(f"_tn_o{i}")
        ordered = o.copy()
        ordered.set("this", exp.column(f"_tn_o{i}", quoted=True))
        text = ordered.sql(dialect="duckdb")
        orders.append(text)
        inner.append("expressions", exp.alias_(o.this.copy(), f"_tn_o{i}"))
    window_end = partition[at].name == WINDOW_END
    return TopN(RANKS[type(call.this)], rank, tuple(parts), tuple(orders), tuple(hidden),
                select_sql, where_sql, "_tn", key, tuple(group), at, window_end)  # fmt: skip


def _group_keys(inner: exp.Select) -> list[exp.Expr]:
    """The GROUP BY expressions (an ordinal stands for its SELECT item)."""
    group = inner.args.get("group")
    out = []
    for g in group.expressions if group is not None else []:
        if isinstance(g, exp.Literal) and g.is_int and 0 < int(g.this) <= len(inner.expressions):
            g = _unalias(inner.expressions[int(g.this) - 1])
        out.append(g)
    return out


def _result_key(
    inner: exp.Select, partition: list[exp.Expr], rank: str, outer: list[exp.Expr] | None
) -> tuple[str, ...]:
    """The result columns holding the PARTITION BY values and the rank ("" where the
    result does not show one); ``outer`` is the SELECT around a subquery, None for ``*``."""

    def shown(name: str) -> str:
        if outer is None:
            return name
        for e in outer:
            base = _unalias(e)
            if isinstance(e, exp.Star) or (isinstance(base, exp.Column) and base.name == name):
                return name if isinstance(e, exp.Star) else str(e.alias_or_name)
        return ""

    key = []
    for p in partition:
        names = [str(i.alias_or_name) for i in inner.expressions
                 if _unalias(i) == p or (isinstance(p, exp.Column) and i.alias_or_name == p.name
                                         and isinstance(_unalias(i), exp.Column))]  # fmt: skip
        key.append(shown(names[0]) if names else "")
    return (*key, shown(rank))


def _unalias(node: exp.Expr) -> exp.Expr:
    return node.this if isinstance(node, exp.Alias) else node


def _placeholder(rank: str) -> exp.Expr:
    return exp.alias_(exp.cast(exp.null(), "BIGINT"), rank, quoted=True)


def ranked_plan(plan: Plan, top: TopN, sql: str) -> Plan:
    """``plan`` (an aggregate, or rows) with its ranking over closed TUMBLE/HOP windows."""
    window = plan.window
    found = sql.lower().find(f"{top.func}(")  # the ranking call, for the error's position
    at = found if found >= 0 else None
    if window is None or window.kind == "session":
        raise unsupported(
            "Top-N over other than TUMBLE/HOP windows", sql, at,
            "rank within windows: FROM TUMBLE(...) or HOP(...), PARTITION BY window_start",
        )  # fmt: skip
    if plan.options.emit != "final":
        return replace(plan, top_n=_changing(plan, top, sql, at))
    return replace(plan, top_n=replace(top, key=()))


def _changing(plan: Plan, top: TopN, sql: str, at: int | None) -> TopN:
    """The ranking of ``emit = 'changes'``: each window's top rows while it is open, as
    upserts of the result row holding each rank (a row leaving the top N is replaced)."""
    what = "Top-N with emit = 'changes'"
    if not plan.grouped:
        raise unsupported(f"{what} over window rows", sql, at,
                          "rank aggregated rows (GROUP BY), or use emit = 'final'")  # fmt: skip
    if top.func != "row_number":
        raise unsupported(f"{what} and {top.func.upper()}()", sql, at,
                          "use ROW_NUMBER(): each rank then holds one row")  # fmt: skip
    if plan.having is not None:
        raise unsupported(f"{what} and HAVING", sql, at,
                          "a group leaving HAVING would empty a rank; use emit = 'final'")  # fmt: skip
    filtered = {c.name for c in sqlglot.parse_one(top.where or "", dialect="duckdb")
                .find_all(exp.Column)}  # fmt: skip
    if filtered - {top.rank}:
        raise unsupported(f"{what} filtered on other than the rank", sql, at,
                          f"filter only on the rank: {top.rank} <= N")  # fmt: skip
    if "" in top.key:
        raise unsupported(f"{what} without the rank and PARTITION BY columns in the result",
                          sql, at, "select them: the result is keyed by them")  # fmt: skip
    return top
