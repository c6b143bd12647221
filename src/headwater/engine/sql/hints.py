"""Errors that teach: SQL from other engines named and translated, typos located.

Before parsing, the pipeline's tokens are scanned for constructs of other streaming
dialects that DuckDB's grammar would only report as a syntax error far from the cause:
Flink's window table functions (``TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), ...))``),
backtick-quoted names, ``PROCTIME()``, ``FOR SYSTEM_TIME AS OF``
and ``WATERMARK FOR``. Each is refused as ``unsupported_sql`` with its position and the
Headwater form. A syntax error names the token where parsing stopped, its line and
column, and a keyword it may be a typo of.

>>> from headwater.engine.sql.text import split_statement
>>> sql = "CREATE PIPELINE p AS SELECT count(*) FROM TABLE(TUMBLE(TABLE bid, "
>>> sql += "DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY window_start, window_end"
>>> try:
...     check_foreign(split_statement(sql))
... except Exception as exc:
...     print(exc)  # doctest: +ELLIPSIS
Flink window table function TABLE(TUMBLE(...)) at line 1, column 43 ...: write TUMBLE(bid, ts, INTERVAL '10 seconds')
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from sqlglot import Token, TokenType

from headwater.engine.sql.text import Statement, syntax_error, unsupported, where
from headwater.errors import BadRequest

WINDOWS = {"TUMBLE", "HOP", "SESSION", "CUMULATE"}
KEYWORDS = ["SELECT", "FROM", "WHERE", "GROUP", "HAVING", "JOIN", "LEFT", "USING",
            "INTERVAL", "CASE", "WHEN", "THEN", "ELSE", "DISTINCT", "TUMBLE", "SESSION",
            "DEDUP", "FILTER", "CAST"]  # fmt: skip


PROCTIME_HINT = (
    "the arrival time of each row is the column _received_at, e.g. "
    "TUMBLE(readings, _received_at, INTERVAL '1 minute'); for event time use the stream's "
    "time column, e.g. TUMBLE(readings, ts, INTERVAL '1 minute')"
)
TEMPORAL_HINT = (
    "a reference table has one current version: [LEFT] JOIN devices d ON r.device_id = d.device_id"
)
WATERMARK_HINT = (
    "the window's time column is the event time; set the delay with "
    "WITH (watermark_delay = '5 seconds')"
)


def check_foreign(statement: Statement) -> None:
    """Refuse constructs of other dialects, naming them and the Headwater form."""
    tokens = statement.body_tokens
    for i in range(len(tokens)):
        error = _foreign(tokens, i, statement.sql)
        if error is not None:
            raise error


def _foreign(tokens: Sequence[Token], i: int, sql: str) -> BadRequest | None:
    token = tokens[i]
    word = token.text.upper()
    after = _words(tokens, i + 1, 3)
    if token.text == "`":
        name = tokens[i + 1].text if i + 1 < len(tokens) else ""
        hint = f'quote names with double quotes ("{name}") or leave them bare'
        return unsupported(f"backtick-quoted name `{name}`", sql, token.start, hint)
    if (
        token.token_type == TokenType.TABLE
        and after[:1] == ["("]
        and WINDOWS.intersection(after[1:2])
    ):
        return _flink_window(tokens, i, sql)
    if word == "PROCTIME" and after[:1] == ["("]:
        return unsupported("PROCTIME() (processing time)", sql, token.start, PROCTIME_HINT)
    if token.token_type == TokenType.FOR and after == ["SYSTEM_TIME", "AS", "OF"]:
        return unsupported("FOR SYSTEM_TIME AS OF (temporal join)", sql, token.start, TEMPORAL_HINT)
    if word == "WATERMARK" and after[:1] == ["FOR"]:
        return unsupported("WATERMARK FOR", sql, token.start, WATERMARK_HINT)
    return None


def _words(tokens: Sequence[Token], start: int, n: int) -> list[str]:
    return [t.text.upper() for t in tokens[start : start + n]]


def _flink_window(tokens: Sequence[Token], at: int, sql: str) -> BadRequest:
    """``TABLE(TUMBLE(TABLE s, DESCRIPTOR(ts), INTERVAL '10' SECOND))``, refused with the
    Headwater form built from its own arguments."""
    name = tokens[at + 2].text.upper()
    construct = f"Flink window table function TABLE({name}(...))"
    if name == "CUMULATE":
        hint = "cumulating windows have no Headwater form: use HOP, or emit = 'changes'"
        return unsupported(construct, sql, tokens[at].start, hint)
    args = _arguments(tokens, at + 4)
    rewrite = _rewrite(name, args)
    hint = f"write {rewrite}" if rewrite else "write TUMBLE(stream, time_column, INTERVAL size)"
    return unsupported(construct, sql, tokens[at].start, hint)


def _arguments(tokens: Sequence[Token], start: int) -> list[list[Token]]:
    """The comma-separated arguments of the call whose '(' is just before ``start``."""
    args: list[list[Token]] = [[]]
    depth = 0
    for token in tokens[start:]:
        kind = token.token_type
        if kind == TokenType.R_PAREN and depth == 0:
            return args
        depth += (kind == TokenType.L_PAREN) - (kind == TokenType.R_PAREN)
        if kind == TokenType.COMMA and depth == 0:
            args.append([])
        else:
            args[-1].append(token)
    return args


def _rewrite(name: str, args: list[list[Token]]) -> str | None:
    """``TUMBLE(bid, ts, INTERVAL '10 seconds')`` from Flink's arguments, if they read so."""
    if len(args) < 3 or not args[0] or args[0][0].token_type != TokenType.TABLE:
        return None
    stream = args[0][1].text if len(args[0]) > 1 else None
    descriptor = [t.text for t in args[1] if t.token_type == TokenType.VAR]
    intervals = [_interval(a) for a in args[2:]]
    if stream is None or len(descriptor) != 2 or None in intervals:
        return None
    partition = [t.text for t in args[0][2:] if t.token_type == TokenType.VAR]
    shown = "SESSION" if name == "SESSION" else name
    call = f"{shown}({stream}, {descriptor[1]}, {', '.join(i for i in intervals if i)})"
    if partition:
        call += f" ... GROUP BY {', '.join(partition)}, window_start, window_end"
    return call


def _interval(arg: list[Token]) -> str | None:
    """``INTERVAL '10' SECOND`` as ``INTERVAL '10 seconds'``."""
    if len(arg) == 3 and arg[0].token_type == TokenType.INTERVAL:
        number, unit = arg[1].text, arg[2].text.lower()
        plural = "" if number == "1" or unit.endswith("s") else "s"
        return f"INTERVAL '{number} {unit}{plural}'"
    if len(arg) == 2 and arg[0].token_type == TokenType.INTERVAL:
        return f"INTERVAL '{arg[1].text}'"
    return None


def syntax_hint(statement: Statement, line: int, col: int, description: str) -> BadRequest:
    """A syntax error at the token sqlglot stopped at (``line``/``col``: its last character)."""
    sql = statement.sql
    end = sum(len(x) + 1 for x in sql.split("\n")[: line - 1]) + max(col - 1, 0)
    token = next((t for t in statement.tokens if t.start <= end <= t.end), None)
    if token is None:
        return syntax_error(sql, min(end, len(sql)), description)
    shown = token.text if token.token_type != TokenType.STRING else f"'{token.text}'"
    what = f"expected ')' before {shown!r}" if description == "Expecting )" else None
    what = what or f"unexpected {shown!r}"
    if description not in ("Expecting )", "Invalid expression / Unexpected token"):
        what += f" ({description})"
    typo = _typo(statement, token)
    return syntax_error(sql, token.start, what + typo)


def _typo(statement: Statement, stop: Token) -> str:
    """'; did you mean FROM (line 1, column 30: FORM)?' for a misspelt keyword near the
    error: the last bare word up to the stopping token that is close to a keyword."""
    before = [t for t in statement.body_tokens if t.start <= stop.start]
    if len(before) > 1 and before[-2].text.upper() in ("GROUP", "ORDER"):
        return f"; did you mean {before[-2].text.upper()} BY?"
    for token in reversed(before):
        if token.token_type != TokenType.VAR:
            continue
        close = difflib.get_close_matches(token.text.upper(), KEYWORDS, n=1, cutoff=0.75)
        if close and close[0] != token.text.upper():
            return f"; did you mean {close[0]} ({where(statement.sql, token.start)}: {token.text})?"
    return ""
