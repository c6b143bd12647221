"""Splitting ``CREATE PIPELINE name AS <select> [WITH (k = 'v', ...)]`` into its parts.

The SELECT is handed to sqlglot as the original text with everything outside it
blanked (newlines kept), so every position sqlglot reports is a position in what the
user wrote, and error messages can say ``line 3, column 8``.

>>> s = split_statement("CREATE PIPELINE p AS SELECT a FROM s WITH (emit = 'changes');")
>>> s.name, s.body.strip(), s.options
('p', 'SELECT a FROM s', [('emit', 'changes', 43)])
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlglot import Token, TokenType, exp
from sqlglot.dialects.duckdb import DuckDB
from sqlglot.errors import TokenError

from headwater.errors import BadRequest, UnsupportedSQL
from headwater.model.schema import NAME_RE

# sqlglot reads SESSION as a keyword; the body sees a same-length function name instead.
SESSION_ALIAS = "SESSWIN"


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    name: str
    body: str  # same length as ``sql``; blanks outside the SELECT
    options: list[tuple[str, str, int]]  # (key, value, offset of the key)
    tokens: list[Token]
    body_tokens: list[Token]  # the SELECT's, as written (SESSION not renamed)


def where(sql: str, offset: int | None) -> str:
    """``line L, column C`` of a character offset (1-based), for messages."""
    if offset is None:
        return "an unknown position"
    line = sql.count("\n", 0, offset) + 1
    column = offset - (sql.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _as_written(text: str) -> str:
    """Text rendered from the parsed body, with SESSION as the user wrote it."""
    return text.replace(SESSION_ALIAS, "SESSION")


def unsupported(construct: str, sql: str, offset: int | None, hint: str) -> UnsupportedSQL:
    """The error for a construct the engine does not run, naming it and where it is."""
    at = where(sql, offset)
    construct, hint = _as_written(construct), _as_written(hint)
    return UnsupportedSQL(
        f"{construct} at {at} is not supported in a streaming pipeline: {hint}",
        construct=construct,
        position=at,
    )


def syntax_error(sql: str, offset: int | None, message: str) -> BadRequest:
    at = where(sql, offset)
    message = _as_written(message)
    return BadRequest(f"SQL syntax error at {at}: {message}", code="sql_syntax_error", position=at)


def node_offset(node: exp.Expr | None) -> int | None:
    """The smallest source offset in a node's subtree (sqlglot keeps few), else its parent's."""
    while node is not None:
        starts = [int(n.meta["start"]) for n in node.walk() if "start" in n.meta]
        if starts:
            return min(starts)
        node = node.parent
    return None


def keyword_offset(tokens: list[Token], word: str, before: int | None) -> int | None:
    """Offset of the last ``word`` keyword token starting before ``before``."""
    found = None
    for token in tokens:
        if before is not None and token.start >= before:
            break
        if token.text.upper().split(" ", 1)[0] == word:
            found = token.start
    return found


def tokenize(sql: str) -> list[Token]:
    try:
        return list(DuckDB().tokenize(sql))
    except TokenError as exc:
        quote = unclosed_quote(sql)
        if quote is not None:
            raise syntax_error(
                sql, quote, f"the string opened by {sql[quote]} is never closed"
            ) from exc
        raise syntax_error(sql, None, str(exc)) from exc


def unclosed_quote(sql: str) -> int | None:
    r"""The offset of a quote (' or ") that is never closed, outside -- comments.

    >>> unclosed_quote("SELECT 'it''s' -- don't\nFROM 'x"), unclosed_quote("SELECT 'a'")
    (29, None)
    """
    opened: int | None = None
    i = 0
    while i < len(sql):
        c = sql[i]
        if opened is None and sql.startswith("--", i):
            end = sql.find("\n", i)
            i = len(sql) if end < 0 else end
            continue
        if opened is None and c in "'\"":
            opened = i
        elif opened is not None and c == sql[opened]:
            if sql[i + 1 : i + 2] == c:  # '' inside a string is one quote
                i += 1
            else:
                opened = None
        i += 1
    return opened


def split_statement(sql: str) -> Statement:
    tokens = tokenize(sql)
    name, body_start = _header(sql, tokens)
    body_end, options = _trailing_options(sql, tokens, body_start)
    if body_end <= body_start:
        raise syntax_error(sql, tokens[-1].start if tokens else 0, "the SELECT is missing")
    body_tokens = tokens[body_start:body_end]
    chars = [c if c == "\n" else " " for c in sql]
    first, last = body_tokens[0].start, body_tokens[-1].end
    chars[first : last + 1] = sql[first : last + 1]
    for i, token in enumerate(body_tokens[:-1]):
        if (
            token.token_type == TokenType.SESSION
            and body_tokens[i + 1].token_type == TokenType.L_PAREN
        ):
            chars[token.start : token.end + 1] = SESSION_ALIAS
    body = "".join(chars)
    return Statement(sql, name, body, options, tokens, body_tokens)


def _header(sql: str, tokens: list[Token]) -> tuple[str, int]:
    """Read ``CREATE PIPELINE name AS``; return the name and the body's first token index."""
    words = [t.text.upper() for t in tokens[:4]]
    if len(tokens) < 5 or words[0] != "CREATE" or words[1] != "PIPELINE" or words[3] != "AS":
        offset = tokens[min(len(tokens) - 1, 3)].start if tokens else 0
        raise syntax_error(sql, offset, "a pipeline reads CREATE PIPELINE <name> AS SELECT ...")
    name = tokens[2].text
    if not NAME_RE.match(name):
        raise syntax_error(
            sql, tokens[2].start, f"pipeline name {name!r} must be letters, digits and '_'"
        )
    return name, 4


def _trailing_options(
    sql: str, tokens: list[Token], body_start: int
) -> tuple[int, list[tuple[str, str, int]]]:
    """Find a trailing ``WITH ( ... )``; return the body's end index and the options."""
    end = len(tokens)
    while end > body_start and tokens[end - 1].token_type == TokenType.SEMICOLON:
        end -= 1
    if end - body_start < 3 or tokens[end - 1].token_type != TokenType.R_PAREN:
        return end, []
    depth, i = 0, end - 1
    while i >= body_start:
        kind = tokens[i].token_type
        depth += kind == TokenType.R_PAREN
        depth -= kind == TokenType.L_PAREN
        if depth == 0:
            break
        i -= 1
    if i <= body_start or tokens[i - 1].token_type != TokenType.WITH:
        return end, []
    return i - 1, _options(sql, tokens[i + 1 : end - 1])


def _options(sql: str, tokens: list[Token]) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    i = 0
    while i < len(tokens):
        part = tokens[i : i + 3]
        if (
            len(part) < 3
            or part[1].token_type != TokenType.EQ
            or part[2].token_type in (TokenType.COMMA, TokenType.EQ)
        ):
            raise syntax_error(sql, tokens[i].start, "WITH options read key = 'value', ...")
        out.append((part[0].text.lower(), part[2].text, part[0].start))
        i += 3
        if i < len(tokens):
            if tokens[i].token_type != TokenType.COMMA:
                raise syntax_error(sql, tokens[i].start, "expected ',' between WITH options")
            i += 1
    return out
