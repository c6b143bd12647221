"""JSON nesting depth, measured on the bytes with numpy instead of by parsing.

A top-level object has depth 1; ``{"a": {"b": [1]}}`` has depth 3. Brackets inside
string literals do not count. The exact measure finds string literals by their
unescaped quotes, so it also works on lines that are not valid JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.int64]

# '[' (0x5B) and '{' (0x7B) differ only in bit 0x20, as do ']' and '}'.
OPEN, CLOSE, CASE_BIT = 0x7B, 0x7D, 0x20
QUOTE, BACKSLASH, COMMA = 0x22, 0x5C, 0x2C
LBRACKET, RBRACKET = 0x5B, 0x5D


def openers_per_span(buf: Bytes, starts: Ints, ends: Ints) -> Ints:
    """Count '{' and '[' per span: a cheap upper bound of each span's depth."""
    openers = np.flatnonzero((buf | CASE_BIT) == OPEN)
    span = np.searchsorted(ends, openers, side="right")
    counts = np.bincount(span, minlength=len(starts) + 1)[: len(starts)]
    return counts.astype(np.int64)


def deep_spans(buf: Bytes, starts: Ints, ends: Ints, max_depth: int, opening: int = 0) -> Ints:
    """Indexes of the spans nested deeper than ``max_depth``.

    ``opening`` spans are known to hold a bracket each (they start with one), so no
    span holds more than ``total - opening + 1``: when that is within the limit,
    nothing is counted per span. Otherwise only spans whose bracket count could
    exceed the limit are measured exactly.
    """
    total = int(np.count_nonzero((buf | CASE_BIT) == OPEN))
    if total - max(opening, 1) + 1 <= max_depth:
        return np.zeros(0, dtype=np.int64)
    suspects = np.flatnonzero(openers_per_span(buf, starts, ends) > max_depth)
    deep = [i for i in suspects.tolist() if max_depth_of(buf[starts[i] : ends[i]]) > max_depth]
    return np.asarray(deep, dtype=np.int64)


def max_depth_of(buf: Bytes) -> int:
    """The deepest bracket nesting in ``buf``, ignoring brackets inside strings."""
    positions, deltas = _brackets(buf)
    if positions.size == 0:
        return 0
    return int(np.cumsum(deltas).max())


@dataclass(frozen=True)
class ArrayLayout:
    """The top-level elements of a JSON array: byte spans and nesting depth of each."""

    starts: Ints
    ends: Ints
    depths: Ints


def array_layout(buf: Bytes) -> ArrayLayout | None:
    """Split a JSON array into its elements without parsing them; None if not an array.

    Used when some element is too deep to parse: the others are then read one by one.
    """
    positions, deltas = _brackets(buf, with_commas=True)
    if positions.size == 0 or buf[positions[0]] != LBRACKET:
        return None
    depth = np.cumsum(deltas)
    closed = np.flatnonzero(depth == 0)
    if closed.size == 0:
        return None
    close = int(closed[0])
    if buf[positions[close]] != RBRACKET or bytes(buf[positions[close] + 1 :]).strip():
        return None
    marks, levels, kinds = positions[: close + 1], depth[: close + 1], deltas[: close + 1]
    first_marks = np.concatenate(([0], np.flatnonzero((kinds == 0) & (levels == 1))))
    bounds = np.concatenate((marks[first_marks], [marks[close]]))
    starts, ends = bounds[:-1] + 1, bounds[1:]
    # An element's depth is the deepest level reached between its bounds, less the array's own.
    depths = np.maximum.reduceat(levels, first_marks) - 1
    if len(starts) == 1 and not bytes(buf[starts[0] : ends[0]]).strip():
        starts, ends, depths = starts[:0], ends[:0], depths[:0]
    return ArrayLayout(starts.astype(np.int64), ends.astype(np.int64), depths.astype(np.int64))


def value_depth(value: Any) -> int:
    """Depth of a decoded JSON value (scalars 0, ``[]`` 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _brackets(buf: Bytes, with_commas: bool = False) -> tuple[Ints, Ints]:
    """Positions of structural brackets (and commas) outside strings, with +1/-1 (0) deltas."""
    folded = buf | CASE_BIT
    marks = (folded == OPEN) | (folded == CLOSE)
    if with_commas:
        marks |= buf == COMMA
    positions = np.flatnonzero(marks)
    if positions.size == 0:
        return positions.astype(np.int64), np.zeros(0, np.int64)
    quotes = _unescaped_quotes(buf)
    outside = np.searchsorted(quotes, positions) % 2 == 0
    positions = positions[outside].astype(np.int64)
    kind = folded[positions]
    deltas = np.where(kind == OPEN, 1, np.where(kind == CLOSE, -1, 0)).astype(np.int64)
    return positions, deltas


def _unescaped_quotes(buf: Bytes) -> Ints:
    quotes = np.flatnonzero(buf == QUOTE)
    slashes = np.flatnonzero(buf == BACKSLASH)
    if slashes.size == 0 or quotes.size == 0:
        return quotes.astype(np.int64)
    # A quote is escaped when an odd run of backslashes ends right before it.
    run_start = np.ones(slashes.size, dtype=bool)
    run_start[1:] = slashes[1:] != slashes[:-1] + 1
    first_of_run = np.maximum.accumulate(np.where(run_start, np.arange(slashes.size), 0))
    last = np.searchsorted(slashes, quotes) - 1
    clipped = np.clip(last, 0, None)
    adjacent = (last >= 0) & (slashes[clipped] == quotes - 1)
    run_length = clipped - first_of_run[clipped] + 1
    escaped = adjacent & (run_length % 2 == 1)
    kept: Ints = quotes[~escaped].astype(np.int64)
    return kept
