"""A brute-force MATCH_RECOGNIZE, for tests only: clearly slow, obviously right.

For each candidate first row, every way the pattern can label the rows that follow is
enumerated by plain recursive backtracking over the pattern tree, in SQL:2016
preferment order (greedy: one more iteration first; reluctant: one fewer first;
alternation: left first). All candidates are listed, those spanning WITHIN or more are
dropped, and the first one left is the match. AFTER MATCH SKIP then picks the next
candidate first row. Conditions are Python functions, written independently of the
engine's SQL evaluation: ``cond(rows, i, var, labels)`` with ``labels`` the rows matched
so far as ``(index, var)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from headwater.engine.patterns.syntax import Alt, Node, Quant, Seq, Var, parse_pattern

Labels = tuple[tuple[int, str], ...]
Cond = Callable[[list[dict[str, Any]], int, str, Labels], bool]


def parses(
    node: Node, pos: int, labels: Labels, rows: list[dict[str, Any]], conds: dict[str, Cond]
) -> Iterator[tuple[int, Labels]]:
    if isinstance(node, Var):
        cond = conds.get(node.name)
        if pos < len(rows) and (cond is None or cond(rows, pos, node.name, labels)):
            yield pos + 1, (*labels, (pos, node.name))
    elif isinstance(node, Seq):
        yield from _seq(list(node.items), pos, labels, rows, conds)
    elif isinstance(node, Alt):
        for option in node.options:
            yield from parses(option, pos, labels, rows, conds)
    else:
        yield from _repeat(node, 0, pos, labels, rows, conds)


def _seq(
    items: list[Node], pos: int, labels: Labels, rows: list[dict[str, Any]], conds: dict[str, Cond]
) -> Iterator[tuple[int, Labels]]:
    if not items:
        yield pos, labels
        return
    for p, lab in parses(items[0], pos, labels, rows, conds):
        yield from _seq(items[1:], p, lab, rows, conds)


def _repeat(
    q: Quant,
    count: int,
    pos: int,
    labels: Labels,
    rows: list[dict[str, Any]],
    conds: dict[str, Cond],
) -> Iterator[tuple[int, Labels]]:
    more = q.high is None or count < q.high
    stop = count >= q.low

    def again() -> Iterator[tuple[int, Labels]]:
        if more:
            for p, lab in parses(q.node, pos, labels, rows, conds):
                yield from _repeat(q, count + 1, p, lab, rows, conds)

    if q.greedy:
        yield from again()
        if stop:
            yield pos, labels
    else:
        if stop:
            yield pos, labels
        yield from again()


def reference_matches(
    pattern: str,
    rows: list[dict[str, Any]],
    conds: dict[str, Cond],
    *,
    time: str = "t",
    within: int | None = None,
    skip: str = "past_last_row",
    skip_to: str | None = None,
) -> list[Labels]:
    """The matches in one partition's rows (already in event-time order)."""
    tree = parse_pattern(pattern)
    out: list[Labels] = []
    start = 0
    while start < len(rows):
        candidates = [lab for _, lab in parses(tree, start, (), rows, conds)]
        if within is not None:
            t0 = rows[start][time]
            candidates = [c for c in candidates if rows[c[-1][0]][time] - t0 < within]
        if not candidates:
            start += 1
            continue
        match = candidates[0]
        out.append(match)
        start = _next_start(start, match, skip, skip_to)
    return out


def _next_start(start: int, match: Labels, skip: str, skip_to: str | None) -> int:
    if skip == "past_last_row":
        return match[-1][0] + 1
    if skip == "to_next_row":
        return start + 1
    mine = [i for i, v in match if v == skip_to]
    target = (mine[0] if skip == "to_first" else mine[-1]) if mine else start
    return target if target > start else start + 1
