"""``plan_pipeline``: pipeline SQL in, frozen ``Plan`` out, or an error saying what and where.

The statement is ``CREATE PIPELINE name AS SELECT ... FROM <source> [WHERE ...]
[GROUP BY ...] [HAVING ...] [WITH (option = 'value', ...)]``; see ``sources`` for the
FROM forms, ``calls`` for the aggregates and ``options`` for the WITH options.
Expressions (CASE, casts, string and math functions) are DuckDB's.

>>> plan = plan_pipeline(
...     "CREATE PIPELINE m AS SELECT device_id, window_start, count(*) AS n "
...     "FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
...     "GROUP BY device_id, window_start, window_end WITH (emit = 'changes')"
... )
>>> plan.kind, plan.window.size_ms, plan.output_key, plan.options.emit
('window', 60000, ('device_id', 'window_start'), 'changes')

Refused, with the construct and its position: ORDER BY, LIMIT, OFFSET, DISTINCT,
QUALIFY, WINDOW, CTEs, UNION and other set operations, subqueries outside FROM
(one in FROM, or ``FROM <pipeline>``, nests a pipeline: ``subqueries``), window functions
(OVER) — except the anomaly functions (``scoring``), bounded OVER aggregates
(``over``) and window Top-N (``topn``) — joins other than [LEFT] JOIN of a reference
table or of two streams (``joins``), unknown table functions, unknown or non-mergeable
aggregates, nested aggregates, columns neither grouped nor aggregated, GROUP BY without
a window unless
emit = 'changes', HAVING with emit = 'changes', SESSION with emit = 'changes'.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from headwater.engine.plan import Column, Options, Plan
from headwater.engine.sql.calls import is_aggregate
from headwater.engine.sql.grouping import WINDOW_COLUMNS, read_grouping
from headwater.engine.sql.hints import check_foreign, syntax_hint
from headwater.engine.sql.joins import is_stream_join, plan_stream_join
from headwater.engine.sql.match_recognize import is_match_recognize, plan_match_recognize
from headwater.engine.sql.options import parse_options
from headwater.engine.sql.over import extract_over, over_plan
from headwater.engine.sql.predict import extract_predictions, with_predictions
from headwater.engine.sql.scoring import extract_scoring, scored_plan
from headwater.engine.sql.sources import Source, read_source
from headwater.engine.sql.subqueries import (
    plan_over,
    plan_windowed,
    reads_pipeline,
    reads_subquery,
    subquery_of,
    windowed_input,
)
from headwater.engine.sql.text import (
    SESSION_ALIAS,
    Statement,
    keyword_offset,
    node_offset,
    split_statement,
    syntax_error,
    unsupported,
)
from headwater.engine.sql.topn import extract_top_n, ranked_plan, ranks_subquery

ALLOWED_CLAUSES = {"expressions", "from_", "where", "group", "having", "joins"}
CLAUSES = {
    "with_": ("WITH", "common table expressions (WITH ... AS)"),
    "distinct": ("DISTINCT", "SELECT DISTINCT"),
    "order": ("ORDER", "ORDER BY"),
    "limit": ("LIMIT", "LIMIT"),
    "offset": ("OFFSET", "OFFSET"),
    "qualify": ("QUALIFY", "QUALIFY"),
    "windows": ("WINDOW", "WINDOW clause"),
    "laterals": ("LATERAL", "LATERAL"),
    "sample": ("USING", "SAMPLE"),
    "into": ("INTO", "SELECT INTO"),
    "match": ("MATCH_RECOGNIZE", "MATCH_RECOGNIZE"),
    "connect": ("CONNECT", "CONNECT BY"),
    "pivots": ("PIVOT", "PIVOT"),
    "prewhere": ("PREWHERE", "PREWHERE"),
    "distribute": ("DISTRIBUTE", "DISTRIBUTE BY"),
    "sort": ("SORT", "SORT BY"),
    "cluster": ("CLUSTER", "CLUSTER BY"),
    "locks": ("FOR", "FOR UPDATE / FOR SHARE"),
    "exclude": ("EXCLUDE", "EXCLUDE"),
    "settings": ("SETTINGS", "SETTINGS"),
    "format": ("FORMAT", "FORMAT"),
    "options": ("OPTION", "OPTION"),
    "hint": ("/*+", "query hints"),
}
SOURCES = {
    "TUMBLE": "TUMBLE(stream, time_column, INTERVAL size)",
    "HOP": "HOP(stream, time_column, INTERVAL slide, INTERVAL size)",
    "SESSION": "SESSION(stream, time_column, INTERVAL gap)",
    "DEDUP": "DEDUP(stream, id_column, time_column, INTERVAL horizon)",
}
HINTS = {
    "ORDER BY": "a continuous query has no end to sort; order when you query the result table",
    "LIMIT": "a continuous query has no end to count to; limit when you query the result table",
}


def plan_pipeline(
    sql: str, *, streams: Collection[str] = (), pipelines: Mapping[str, str] | None = None
) -> Plan:
    """Plan ``CREATE PIPELINE ...``. ``streams``: known stream names (refused in JOIN);
    ``pipelines``: the SQL of the pipelines a ``FROM`` may read (``subqueries``)."""
    statement = split_statement(sql)
    if is_match_recognize(statement):
        return plan_match_recognize(statement, streams)
    check_foreign(statement)
    select, predictions = extract_predictions(_parse(statement), sql)
    plan = _plan_from(statement, select, streams, pipelines or {})
    return with_predictions(plan, predictions)


def _plan_from(
    statement: Statement, select: exp.Select, streams: Collection[str], pipelines: Mapping[str, str]
) -> Plan:
    """Plan by what FROM reads: two streams joined, another pipeline, a subquery, a stream."""

    def rest(st: Statement, sel: exp.Select) -> Plan:
        return _plan(st, sel, streams, over_rows=True)

    def nested(st: Statement, sel: exp.Select) -> Plan:
        return _plan_from(st, sel, streams, pipelines)

    if is_stream_join(select, streams):
        return plan_stream_join(statement, select, rest, nested)
    windowed = windowed_input(select, set(pipelines) - set(streams))
    if windowed is not None:
        read = windowed[1]
        if isinstance(read, str):
            others = {k: v for k, v in pipelines.items() if k != read}
            inner = plan_pipeline(pipelines[read], streams=streams, pipelines=others)
        else:
            inner = nested(statement, read)
        return plan_windowed(statement, select, inner, rest)
    upstream = reads_pipeline(select, set(pipelines) - set(streams))
    if upstream is not None:
        others = {k: v for k, v in pipelines.items() if k != upstream}  # no cycles
        inner = plan_pipeline(pipelines[upstream], streams=streams, pipelines=others)
        alias = select.args["from_"].this.alias or upstream
        return plan_over(statement, select, inner, alias, rest)
    if reads_subquery(select) and not ranks_subquery(select):
        sub, alias = subquery_of(select, statement.sql)
        return plan_over(statement, select, nested(statement, sub), alias, rest)
    return _plan(statement, select, streams)


def _plan(
    statement: Statement, select: exp.Select, streams: Collection[str], over_rows: bool = False
) -> Plan:
    """``over_rows``: FROM reads result rows (a subquery's, joined rows), whose
    ``window_start``/``window_end`` are plain columns."""
    sql = statement.sql
    options = parse_options(statement.options, sql)
    select, top_n = extract_top_n(select, sql)
    select, over = extract_over(select, sql)
    ranked = top_n is not None or over_rows
    plan = _plan_select(statement, select, options, streams, ranked, over_rows)
    plan = plan if over is None else over_plan(plan, over, sql)
    return plan if top_n is None else ranked_plan(plan, top_n, sql)


def _plan_select(
    statement: Statement,
    select: exp.Select,
    options: Options,
    streams: Collection[str],
    ranked: bool = False,
    over_rows: bool = False,
) -> Plan:
    sql = statement.sql
    select, scoring, qualify = extract_scoring(select, sql)
    _check_clauses(select, statement)
    source = read_source(select, sql, streams)
    _check_nodes(select, sql)
    filter_sql = _filter(select, sql, over_rows)
    if scoring is not None:
        return scored_plan(_stateless(statement, source, options, select, filter_sql), scoring,
                           qualify, select)  # fmt: skip
    having = select.args.get("having")
    grouped = select.args.get("group") is not None or any(
        is_aggregate(n) for item in select.expressions for n in item.walk()
    )
    if not grouped:
        if having is not None:
            raise unsupported("HAVING without aggregates", sql, node_offset(having), "use WHERE")
        return _stateless(statement, source, options, select, filter_sql, ranked)
    _check_mode(select, source, options, sql)
    g = read_grouping(select, sql, source.alias, source.window)
    return Plan(
        name=statement.name,
        sql=sql,
        source=source.stream,
        source_alias=source.alias,
        window=source.window,
        dedup=source.dedup,
        joins=source.joins,
        filter=filter_sql,
        keys=g.keys,
        pre=g.pre,
        aggregates=g.aggregates,
        projection=g.projection,
        having=g.having,
        grouped=True,
        options=options,
    )


def _parse(statement: Statement) -> exp.Select:
    sql = statement.sql
    try:
        parsed = [p for p in sqlglot.parse(statement.body, dialect="duckdb") if p is not None]
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        line, col = err.get("line") or 1, err.get("col") or 1
        raise syntax_hint(statement, line, col, str(err.get("description") or exc)) from exc
    if len(parsed) != 1:
        raise syntax_error(sql, None, "a pipeline holds exactly one SELECT")
    node = parsed[0]
    if isinstance(node, exp.SetOperation):
        word = type(node).__name__.upper()
        at = keyword_offset(statement.tokens, word, None)
        raise unsupported(word, sql, at, "run one pipeline per SELECT")
    if not isinstance(node, exp.Select):
        raise syntax_error(sql, node_offset(node), "a pipeline's body is a SELECT")
    return node


def _check_clauses(select: exp.Select, statement: Statement) -> None:
    for key, value in select.args.items():
        if not value or key in ALLOWED_CLAUSES:
            continue
        word, construct = CLAUSES.get(key, ("", "this clause"))
        first = node_offset(value) if isinstance(value, exp.Expr) else None
        if isinstance(value, list) and value and isinstance(value[0], exp.Expr):
            first = node_offset(value[0])
        offset = keyword_offset(statement.tokens, word, first) or first
        hint = HINTS.get(construct, "a continuous query cannot run it")
        raise unsupported(construct, statement.sql, offset, hint)


def _check_nodes(select: exp.Select, sql: str) -> None:
    for node in select.walk():
        if isinstance(node, exp.Rollup | exp.Cube | exp.GroupingSets):
            what = type(node).__name__.upper().replace("GROUPINGSETS", "GROUPING SETS")
            raise unsupported(what, sql, node_offset(node), "list the keys in GROUP BY")
        if isinstance(node, exp.Window):
            raise unsupported(
                "window function (OVER)",
                sql,
                node_offset(node),
                "use TUMBLE, HOP or SESSION with GROUP BY",
            )
        if node is not select and isinstance(node, exp.Subquery | exp.Select | exp.Exists):
            raise unsupported("subquery", sql, node_offset(node), "join a reference table instead")
        if isinstance(node, exp.WithinGroup):
            raise unsupported("WITHIN GROUP", sql, node_offset(node), "use approx_quantile(x, q)")
        if isinstance(node, exp.Placeholder | exp.Parameter):
            raise unsupported("query parameter", sql, node_offset(node), "write the value")
        if isinstance(node, exp.Anonymous) and node.find_ancestor(exp.From) is None:
            name = str(node.name).upper().replace(SESSION_ALIAS, "SESSION")
            if name in SOURCES:
                raise unsupported(
                    f"{name}(...) outside FROM",
                    sql,
                    node_offset(node),
                    f"{name} is a source: FROM {SOURCES[name]}, then GROUP BY window_start",
                )


def _filter(select: exp.Select, sql: str, over_rows: bool = False) -> str | None:
    where_ = select.args.get("where")
    if where_ is None:
        return None
    for node in where_.walk():
        if is_aggregate(node):
            raise unsupported("aggregate in WHERE", sql, node_offset(node), "use HAVING")
        if over_rows and isinstance(node, exp.Column) and node.name in WINDOW_COLUMNS:
            continue
        if isinstance(node, exp.Column) and str(node.name).lower() in WINDOW_COLUMNS:
            raise unsupported(
                f"{node.name} in WHERE", sql, node_offset(node), "filter windows in HAVING"
            )
    return str(where_.this.sql(dialect="duckdb"))


def _check_mode(select: exp.Select, source: Source, options: Options, sql: str) -> None:
    at = node_offset(select.args.get("group") or select)
    if source.window is None and options.emit == "final":
        raise unsupported(
            "GROUP BY without a window",
            sql,
            at,
            "a stream never ends, so a final result never comes: aggregate over "
            "TUMBLE/HOP/SESSION windows, or set WITH (emit = 'changes') for running totals",
        )
    if source.window is not None and source.window.kind == "session" and options.emit == "changes":
        raise unsupported(
            "SESSION with emit = 'changes'",
            sql,
            at,
            "sessions merge, so their rows are known only when they close; use emit = 'final'",
        )
    having = select.args.get("having")
    if having is not None and options.emit == "changes":
        raise unsupported(
            "HAVING with emit = 'changes'",
            sql,
            node_offset(having),
            "a group could leave the result after it was emitted; filter when you query",
        )


def _stateless(
    statement: Statement,
    source: Source,
    options: Options,
    select: exp.Select,
    filter_sql: str | None,
    windowed: bool = False,  # rows of windows, ranked by a Top-N (``topn``)
) -> Plan:
    sql = statement.sql
    if source.window is not None and not windowed:
        raise unsupported(
            f"{source.window.kind.upper()} without aggregates",
            sql,
            node_offset(select),
            "aggregate the windows: GROUP BY ..., window_start, window_end",
        )
    projection: list[Column] = []
    for item in select.expressions:
        node = item.this if isinstance(item, exp.Alias) else item
        for col in node.find_all(exp.Column):
            if str(col.name).lower() in WINDOW_COLUMNS and not windowed:
                raise unsupported(f"{col.name} without a window", sql, node_offset(col), "window")
        text = node.sql(dialect="duckdb")
        if isinstance(item, exp.Alias):
            projection.append(Column(item.alias, text))
        elif isinstance(node, exp.Star) or (isinstance(node, exp.Column) and node.is_star):
            projection.append(Column("*", text))
        elif isinstance(node, exp.Column):
            own = node.table in ("", source.alias)
            projection.append(Column(str(node.name), text, str(node.name) if own else None))
        else:
            projection.append(Column(text, text))
    return Plan(
        name=statement.name,
        sql=sql,
        source=source.stream,
        source_alias=source.alias,
        window=source.window if windowed else None,
        dedup=source.dedup,
        joins=source.joins,
        filter=filter_sql,
        projection=tuple(projection),
        options=options,
    )
