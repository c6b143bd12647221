"""Planning ``SELECT ... FROM stream MATCH_RECOGNIZE (...)``: the pattern-matching pipeline.

::

    CREATE PIPELINE logins_alert AS
    SELECT * FROM logins MATCH_RECOGNIZE (
        PARTITION BY user_id ORDER BY ts
        MEASURES FIRST(F.ts) AS first_failure, LAST(S.ts) AS success, COUNT(F.*) AS failures
        ONE ROW PER MATCH
        AFTER MATCH SKIP PAST LAST ROW
        PATTERN (F{3,} S) WITHIN INTERVAL '5' MINUTE
        DEFINE F AS F.ok = false, S AS S.ok = true
    ) AS m
    WITH (watermark_delay = '10 seconds')

sqlglot reads the clause (Snowflake/Oracle grammar) except ``WITHIN``, which is read
here from the tokens and blanked out before sqlglot sees the text. The PATTERN text is
read by ``engine.patterns.syntax``; DEFINE and MEASURES by ``engine.patterns``. The
SELECT list and WHERE apply to the match rows (partition columns, then measures).
``WITH (max_partial_matches = 'N')`` caps live partial matches per partition and is
required when WITHIN is absent.

>>> plan = plan_match_recognize(split_statement(
...     "CREATE PIPELINE p AS SELECT * FROM s MATCH_RECOGNIZE (PARTITION BY k ORDER BY ts "
...     "MEASURES LAST(B.v) AS top PATTERN (A B+) WITHIN INTERVAL '1' MINUTE "
...     "DEFINE B AS B.v > PREV(B.v))"))
>>> plan.kind, plan.pattern.pattern, plan.pattern.within_ms, plan.pattern.skip
('pattern', 'A B+', 60000, 'past_last_row')
"""

from __future__ import annotations

import re
from collections.abc import Collection

import sqlglot
from sqlglot import Token, TokenType, exp
from sqlglot.errors import ParseError

from headwater.engine.patterns import PatternError, PatternSpec, SkipKind, parse_pattern
from headwater.engine.plan import Column, Plan
from headwater.engine.sql.options import parse_options
from headwater.engine.sql.text import (
    Statement,
    node_offset,
    split_statement,
    syntax_error,
    unsupported,
)
from headwater.model.time import parse_duration_ms

__all__ = ["is_match_recognize", "plan_match_recognize", "split_statement"]

CAP_OPTION = "max_partial_matches"
SKIP_RE = re.compile(
    r"AFTER\s+MATCH\s+SKIP\s+(PAST\s+LAST\s+ROW|TO\s+NEXT\s+ROW|TO\s+(FIRST|LAST)\s+(\w+))$",
    re.IGNORECASE,
)
ALLOWED = {"expressions", "from_", "match", "where", "kind"}


def is_match_recognize(statement: Statement) -> bool:
    return any(t.text.upper() == "MATCH_RECOGNIZE" for t in statement.tokens)


def plan_match_recognize(statement: Statement, streams: Collection[str] = ()) -> Plan:
    """Plan the statement; ``streams`` is accepted for symmetry with ``plan_pipeline``."""
    sql = statement.sql
    cap, rest = _cap(statement)
    options = parse_options(rest, sql)
    within_ms, body = _within(statement)
    pattern, pattern_at = _pattern_text(statement)
    try:
        parse_pattern(pattern)
    except PatternError as exc:
        raise syntax_error(sql, pattern_at + exc.column - 1, str(exc)) from exc
    select = _parse(sql, body)
    mr = select.args["match"]
    source, alias = _source(select, sql)
    if within_ms is None and cap is None:
        raise unsupported(
            "MATCH_RECOGNIZE without WITHIN",
            sql,
            node_offset(mr),
            "partial matches would be kept forever: add WITHIN INTERVAL '5' MINUTE after "
            f"PATTERN (...), or cap them with WITH ({CAP_OPTION} = '10000')",
        )
    skip, skip_to = _skip(mr, sql)
    spec = PatternSpec(
        pattern=pattern,
        define=tuple(
            (str(d.alias).upper(), d.this.sql(dialect="snowflake"))
            for d in mr.args.get("define") or []
        ),
        measures=tuple(_measure(m, sql) for m in mr.args.get("measures") or []),
        partition_by=tuple(
            _column(c, sql, "PARTITION BY") for c in mr.args.get("partition_by") or []
        ),
        order_by=_order(mr, sql),
        skip=skip,
        skip_to=skip_to,
        within_ms=within_ms,
        max_partial_matches=cap,
    )
    filter_sql = None
    if select.args.get("where") is not None:
        filter_sql = select.args["where"].this.sql(dialect="duckdb")
    return Plan(
        name=statement.name,
        sql=sql,
        source=source,
        source_alias=alias,
        filter=filter_sql,
        projection=_projection(select, alias),
        options=options,
        pattern=spec,
    )


def _cap(statement: Statement) -> tuple[int | None, list[tuple[str, str, int]]]:
    cap, rest = None, []
    for key, value, at in statement.options:
        if key != CAP_OPTION:
            rest.append((key, value, at))
            continue
        text = value.strip("'")
        if not text.isdigit() or int(text) < 1:
            raise syntax_error(statement.sql, at, f"{CAP_OPTION} is a positive whole number")
        cap = int(text)
    return cap, rest


def _within(statement: Statement) -> tuple[int | None, str]:
    """Read ``WITHIN INTERVAL '5' MINUTE`` (or ``'5 minutes'``); blank it in the body."""
    tokens, body = statement.tokens, statement.body
    for i, tok in enumerate(tokens):
        if tok.text.upper() != "WITHIN":
            continue
        parts = tokens[i + 1 : i + 4]
        if (
            len(parts) < 2
            or parts[0].text.upper() != "INTERVAL"
            or parts[1].token_type != TokenType.STRING
        ):
            raise syntax_error(statement.sql, tok.start, "write WITHIN INTERVAL '5' MINUTE")
        text, last = parts[1].text, parts[1]
        if len(parts) == 3 and _unit(parts[2]):
            text, last = f"{text} {parts[2].text}", parts[2]
        try:
            ms = parse_duration_ms(text)
        except ValueError as exc:
            raise syntax_error(statement.sql, parts[1].start, f"WITHIN: {exc}") from exc
        if ms <= 0:
            raise syntax_error(statement.sql, parts[1].start, "WITHIN must be positive")
        blank = body[: tok.start] + " " * (last.end + 1 - tok.start) + body[last.end + 1 :]
        return ms, blank
    return None, body


def _unit(token: Token) -> bool:
    return token.text.lower().rstrip("s") in ("millisecond", "second", "minute", "hour", "day")


def _parse(sql: str, body: str) -> exp.Select:
    try:
        node = sqlglot.parse_one(body, read="snowflake")
    except ParseError as exc:
        err = exc.errors[0] if exc.errors else {}
        line, col = err.get("line") or 1, err.get("col") or 1
        offset = sum(len(x) + 1 for x in sql.split("\n")[: line - 1]) + max(col - 1, 0)
        raise syntax_error(sql, offset, str(err.get("description") or exc)) from exc
    if not isinstance(node, exp.Select) or node.args.get("match") is None:
        raise syntax_error(
            sql, None, "MATCH_RECOGNIZE follows the stream: FROM s MATCH_RECOGNIZE (...)"
        )
    for key, value in node.args.items():
        if value and key not in ALLOWED:
            what = key.upper().rstrip("_")
            raise unsupported(
                f"{what} with MATCH_RECOGNIZE",
                sql,
                node_offset(value) if isinstance(value, exp.Expr) else None,
                "select and filter the match rows; aggregate them in a pipeline of their own",
            )
    return node


def _source(select: exp.Select, sql: str) -> tuple[str, str]:
    table = select.args["from_"].this
    if not isinstance(table, exp.Table) or table.args.get("joins") or select.args.get("joins"):
        raise unsupported(
            "MATCH_RECOGNIZE over this source", sql, node_offset(table), "name a stream"
        )
    mr = select.args["match"]
    alias = mr.args.get("alias")
    return str(table.name), str(alias.name) if alias is not None else str(table.name)


def _pattern_text(statement: Statement) -> tuple[str, int]:
    """The text inside ``PATTERN ( ... )`` and its offset: up to the last ``)`` before
    WITHIN or DEFINE, so an unbalanced pattern is reported by the pattern parser."""
    tokens = statement.tokens
    for i, tok in enumerate(tokens[:-1]):
        if tok.text.upper() != "PATTERN" or tokens[i + 1].token_type != TokenType.L_PAREN:
            continue
        start = tokens[i + 1].end + 1
        ends = [
            j for j in range(i + 2, len(tokens)) if tokens[j].text.upper() in ("WITHIN", "DEFINE")
        ]
        stop = ends[0] if ends else len(tokens)
        closing = [j for j in range(i + 2, stop) if tokens[j].token_type == TokenType.R_PAREN]
        if closing:
            return statement.sql[start : tokens[closing[-1]].start], start
    raise syntax_error(statement.sql, None, "MATCH_RECOGNIZE needs PATTERN (...)")


def _skip(mr: exp.MatchRecognize, sql: str) -> tuple[SkipKind, str | None]:
    after = mr.args.get("after")
    rows = mr.args.get("rows")
    if rows is not None and " ".join(str(rows.this).upper().split()) != "ONE ROW PER MATCH":
        raise unsupported(str(rows.this), sql, node_offset(mr), "use ONE ROW PER MATCH")
    if after is None:
        return "past_last_row", None
    text = " ".join(str(after.this).split())
    m = SKIP_RE.match(text)
    if m is None:
        raise syntax_error(sql, node_offset(mr), f"cannot read {text!r}")
    if m.group(2):
        kind: SkipKind = "to_first" if m.group(2).upper() == "FIRST" else "to_last"
        return kind, m.group(3).upper()
    return ("past_last_row" if m.group(1).upper().startswith("PAST") else "to_next_row"), None


def _measure(m: exp.Expr, sql: str) -> tuple[str, str]:
    node = m.this if isinstance(m, exp.MatchRecognizeMeasure) else m
    if not isinstance(node, exp.Alias):
        raise syntax_error(sql, node_offset(m), "name each measure: MEASURES LAST(A.x) AS x")
    return str(node.alias), node.this.sql(dialect="snowflake")


def _column(node: exp.Expr, sql: str, where_: str) -> str:
    if not isinstance(node, exp.Column):
        raise unsupported(f"expression in {where_}", sql, node_offset(node), "name a column")
    return str(node.name)


def _order(mr: exp.MatchRecognize, sql: str) -> str:
    order = mr.args.get("order")
    items = order.expressions if order is not None else []
    if len(items) != 1 or items[0].args.get("desc"):
        raise unsupported(
            "MATCH_RECOGNIZE without one ascending ORDER BY",
            sql,
            node_offset(mr),
            "order by the event-time column: ORDER BY ts",
        )
    return _column(items[0].this, sql, "ORDER BY")


def _projection(select: exp.Select, alias: str) -> tuple[Column, ...]:
    out: list[Column] = []
    for item in select.expressions:
        node = item.this if isinstance(item, exp.Alias) else item
        if isinstance(node, exp.Column) and node.table == alias:
            node = exp.column(str(node.name), quoted=True) if not node.is_star else exp.Star()
        text = node.sql(dialect="duckdb")
        if isinstance(item, exp.Alias):
            out.append(Column(item.alias, text))
        elif isinstance(node, exp.Star) or (isinstance(node, exp.Column) and node.is_star):
            out.append(Column("*", "*"))
        elif isinstance(node, exp.Column):
            out.append(Column(str(node.name), text, str(node.name)))
        else:
            out.append(Column(text, text))
    return tuple(out)
