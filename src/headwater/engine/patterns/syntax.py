"""The ``PATTERN ( ... )`` grammar of ``MATCH_RECOGNIZE``: text in, a small tree out.

::

    pattern := alt
    alt     := seq ('|' seq)*
    seq     := item+
    item    := (VAR | '(' alt ')') quant?
    quant   := ('*' | '+' | '?' | '{n}' | '{n,}' | '{n,m}' | '{,m}') '?'?

A trailing ``?`` makes a quantifier reluctant. Variables are identifiers, compared
without case (``a`` and ``A`` are one variable) and kept upper-case. Errors name the
problem and its 1-based column in the pattern text.

>>> parse_pattern("A B+? (C | D){2,}")
Seq(items=(Var(name='A'), Quant(node=Var(name='B'), low=1, high=None, greedy=False), \
Quant(node=Alt(options=(Var(name='C'), Var(name='D'))), low=2, high=None, greedy=True)))
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPEAT = 100  # a bound above this would compile to a very large automaton


class PatternError(ValueError):
    """A pattern that cannot be read or run; ``column`` is 1-based in the pattern text."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"PATTERN column {column}: {message}")
        self.column = column


@dataclass(frozen=True, slots=True)
class Var:
    name: str


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Quant:
    node: Node
    low: int
    high: int | None  # None: unbounded
    greedy: bool


Node = Var | Seq | Alt | Quant

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\{[^}]*\}?)|(.))")
_BOUNDS = re.compile(r"\{\s*(\d*)\s*(,?)\s*(\d*)\s*\}")


def parse_pattern(text: str) -> Node:
    """Parse a pattern; raise ``PatternError`` naming what is wrong and where."""
    parser = _Parser(text)
    node = parser.alt()
    if parser.peek() is not None:
        tok, at = parser.tokens[parser.i]
        raise PatternError(f"unexpected {tok!r}", at + 1)
    if min_rows(node) == 0:
        raise PatternError("the pattern can match no rows at all; make some part mandatory", 1)
    return node


def variables(node: Node) -> list[str]:
    """The pattern's variables, in order of first appearance."""
    if isinstance(node, Var):
        return [node.name]
    children = (
        node.items
        if isinstance(node, Seq)
        else (node.options if isinstance(node, Alt) else (node.node,))
    )
    out: list[str] = []
    for child in children:
        out += [v for v in variables(child) if v not in out]
    return out


def min_rows(node: Node) -> int:
    if isinstance(node, Var):
        return 1
    if isinstance(node, Seq):
        return sum(min_rows(n) for n in node.items)
    if isinstance(node, Alt):
        return min(min_rows(n) for n in node.options)
    return node.low * min_rows(node.node)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, int]] = []
        pos = 0
        while text[pos:].strip():
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos or m.lastindex is None:
                break
            self.tokens.append((m.group(m.lastindex), m.start(m.lastindex)))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i][0] if self.i < len(self.tokens) else None

    def at(self) -> int:
        return (self.tokens[self.i][1] if self.i < len(self.tokens) else len(self.text)) + 1

    def take(self) -> str:
        tok = self.tokens[self.i][0]
        self.i += 1
        return tok

    def alt(self) -> Node:
        options = [self.seq()]
        while self.peek() == "|":
            self.take()
            options.append(self.seq())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def seq(self) -> Node:
        items: list[Node] = []
        while self.peek() not in (None, "|", ")"):
            items.append(self.item())
        if not items:
            what = "end of pattern" if self.peek() is None else repr(self.peek())
            raise PatternError(f"expected a variable or '(' before {what}", self.at())
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def item(self) -> Node:
        start = self.at()
        tok = self.take()
        node: Node
        if tok == "(":
            node = self.alt()
            if self.peek() != ")":
                raise PatternError("missing ')' to close the group opened here", start)
            self.take()
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", tok):
            if tok.upper() == "PERMUTE":
                raise PatternError("PERMUTE is not supported; list the orders with '|'", start)
            node = Var(tok.upper())
        elif tok in ("^", "$"):
            raise PatternError(f"anchor {tok!r} is not supported", start)
        elif tok.startswith("{-"):
            raise PatternError("exclusion {- -} is not supported", start)
        else:
            raise PatternError(f"unexpected {tok!r}; expected a variable or '('", start)
        return self.quantifier(node)

    def quantifier(self, node: Node) -> Node:
        at = self.at()
        tok = self.peek()
        if tok == "*":
            low, high = 0, None
        elif tok == "+":
            low, high = 1, None
        elif tok == "?":
            low, high = 0, 1
        elif tok is not None and tok.startswith("{"):
            low, high = self.bounds(tok, at)
        else:
            return node
        self.take()
        greedy = True
        if self.peek() == "?":
            self.take()
            greedy = False
        if self.peek() in ("*", "+") or (self.peek() or "").startswith("{"):
            raise PatternError("a quantifier cannot follow a quantifier; use a group", self.at())
        if min_rows(node) == 0:
            raise PatternError("a quantified part can match no rows; make it mandatory", at)
        return Quant(node, low, high, greedy)

    def bounds(self, tok: str, at: int) -> tuple[int, int | None]:
        m = _BOUNDS.fullmatch(tok)
        if m is None or (not m.group(1) and not m.group(3)):
            raise PatternError(f"bad quantifier {tok!r}; write {{n}}, {{n,}}, {{n,m}}", at)
        low = int(m.group(1) or 0)
        high = (int(m.group(3)) if m.group(3) else None) if m.group(2) else low
        if high is not None and high < low:
            raise PatternError(f"in {tok!r} the upper bound is below the lower bound", at)
        if max(low, high or 0) > MAX_REPEAT:
            raise PatternError(f"bounds above {MAX_REPEAT} are not supported", at)
        if high == 0:
            raise PatternError(f"{tok!r} matches nothing; remove it", at)
        return low, high
