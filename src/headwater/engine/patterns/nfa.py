"""A pattern compiled to a Thompson NFA, run as a Pike VM with thread priorities.

The program is a list of instructions: ``("row", var, next)`` consumes a row that
satisfies ``var``'s condition, ``("split", first, second)`` forks (the first branch is
preferred), ``("jmp", to)`` and ``("match",)``. Greedy quantifiers prefer another
iteration, reluctant ones prefer to stop; alternation prefers its left option. Threads
are kept in priority order, so the first thread to reach ``match`` once every preferred
thread above it has died is the match SQL:2016 defines (the preferment order of a
backtracking matcher), found in one left-to-right pass.

>>> prog = compile_pattern(parse_pattern("A B+"))
>>> prog[0], prog[-1]
(('row', 'A', 1), ('match',))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from headwater.engine.patterns.syntax import Alt, Node, Quant, Seq, Var, parse_pattern

__all__ = ["Labels", "closure", "compile_pattern", "labels_list", "parse_pattern"]

Instr = tuple[Any, ...]
# A thread's rows so far as a shared linked list: (row index, variable, previous) or None.
Labels = tuple[int, str, Any] | None


def compile_pattern(node: Node) -> list[Instr]:
    prog: list[Instr] = []
    _emit(node, prog)
    prog.append(("match",))
    return prog


def _emit(node: Node, prog: list[Instr]) -> None:
    if isinstance(node, Var):
        prog.append(("row", node.name, len(prog) + 1))
    elif isinstance(node, Seq):
        for item in node.items:
            _emit(item, prog)
    elif isinstance(node, Alt):
        _alt(list(node.options), prog)
    else:
        _quant(node, prog)


def _alt(options: list[Node], prog: list[Instr]) -> None:
    if len(options) == 1:
        _emit(options[0], prog)
        return
    split = len(prog)
    prog.append(("split", split + 1, -1))
    _emit(options[0], prog)
    jmp = len(prog)
    prog.append(("jmp", -1))
    prog[split] = ("split", split + 1, len(prog))
    _alt(options[1:], prog)
    prog[jmp] = ("jmp", len(prog))


def _fork(prog: list[Instr], at: int, body: int, out: int, greedy: bool) -> None:
    prog[at] = ("split", body, out) if greedy else ("split", out, body)


def _quant(q: Quant, prog: list[Instr]) -> None:
    for _ in range(q.low):
        _emit(q.node, prog)
    if q.high is None:  # X*: L: split body, out; body; jmp L
        loop = len(prog)
        prog.append(("split", -1, -1))
        _emit(q.node, prog)
        prog.append(("jmp", loop))
        _fork(prog, loop, loop + 1, len(prog), q.greedy)
        return
    # (X (X (...)?)?)? for the optional iterations: no two paths label rows alike.
    forks: list[int] = []
    for _ in range(q.high - q.low):
        forks.append(len(prog))
        prog.append(("split", -1, -1))
        _emit(q.node, prog)
    end = len(prog)
    for at in forks:
        _fork(prog, at, at + 1, end, q.greedy)


def closure(
    prog: list[Instr],
    pc: int,
    labels: Labels,
    out: list[tuple[int, Labels]],
    seen: dict[Any, Labels],
    by_labels: bool,
) -> None:
    """Add thread (pc, labels) and every thread its epsilon moves reach, in priority order.

    ``seen`` drops a thread equal to one already added this step: same pc (when
    conditions do not depend on the rows matched so far, so futures are equal) or same
    pc and same rows (``by_labels``).
    """
    key = (pc, id(labels)) if by_labels else pc
    if key in seen:
        return
    seen[key] = labels  # holds the labels alive, so their id() stays unique this step
    instr = prog[pc]
    if instr[0] == "jmp":
        closure(prog, instr[1], labels, out, seen, by_labels)
    elif instr[0] == "split":
        closure(prog, instr[1], labels, out, seen, by_labels)
        closure(prog, instr[2], labels, out, seen, by_labels)
    else:
        out.append((pc, labels))


def step(
    prog: list[Instr],
    threads: list[tuple[int, Labels]],
    row: int,
    accepts: Callable[[str, Labels, int], bool],
    by_labels: bool,
) -> list[tuple[int, Labels]]:
    """Advance every thread over ``row``; the survivors, in priority order."""
    out: list[tuple[int, Labels]] = []
    seen: dict[Any, Labels] = {}
    for pc, labels in threads:
        instr = prog[pc]
        if instr[0] == "row" and accepts(instr[1], labels, row):
            closure(prog, instr[2], (row, instr[1], labels), out, seen, by_labels)
    return out


def labels_list(labels: Labels) -> list[tuple[int, str]]:
    """The rows of a thread, first to last, as (row index, variable)."""
    out: list[tuple[int, str]] = []
    while labels is not None:
        out.append((labels[0], labels[1]))
        labels = labels[2]
    out.reverse()
    return out
