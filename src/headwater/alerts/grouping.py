"""Grouping notifications, as Alertmanager does: pure decisions with the clock passed in.

A rule with grouping sorts its notifications into groups: one per value of its
``group_by`` columns (no columns: the whole rule is one group), per channel. A group
sends all that waits in it as *one* notification:

- a new group (no key of it announced as firing) waits ``group_wait`` after its first
  notification, so that keys firing together arrive together;
- after that, what arrives waits until ``group_interval`` has passed since the group's
  last send;
- a group whose keys have all been announced resolved ends: the next notification starts
  a new group (``group_wait`` again).

A rule without grouping sends each notification at once, on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_WAIT_MS = 30_000
DEFAULT_INTERVAL_MS = 300_000


@dataclass(frozen=True, slots=True)
class Grouping:
    by: tuple[str, ...] = ()
    wait_ms: int = DEFAULT_WAIT_MS
    interval_ms: int = DEFAULT_INTERVAL_MS


@dataclass(frozen=True, slots=True)
class Waiting:
    """One notification waiting in a group: its id, key, kind and when it was made."""

    id: str
    key: str
    kind: str  # "firing" | "resolved"
    at_ms: int


@dataclass(frozen=True, slots=True)
class GroupState:
    """What a group remembers between sends."""

    last_sent_ms: int
    firing: frozenset[str] = field(default_factory=frozenset)  # keys announced as firing


def group_of(by: tuple[str, ...], key_column: str, key: str, values: dict[str, Any]) -> str:
    """The group a key's notification belongs to: its ``by`` values, as text.

    >>> group_of(("site",), "device", "d1", {"site": "north", "t": 3})
    'site=north'
    >>> group_of((), "device", "d1", {})
    ''
    """
    parts = []
    for col in by:
        v = key if col == key_column else values.get(col)
        parts.append(f"{col}={'' if v is None else v}")
    return ",".join(parts)


def due_at(first_ms: int, state: GroupState | None, g: Grouping) -> int:
    """When a group with waiting notifications (the oldest made at ``first_ms``) sends."""
    if state is None:
        return first_ms + g.wait_ms
    return state.last_sent_ms + g.interval_ms


def sent(state: GroupState | None, batch: list[Waiting], now_ms: int) -> GroupState | None:
    """The group after sending ``batch`` at ``now_ms``; None when no key fires any more.

    >>> s = sent(None, [Waiting("1", "a", "firing", 0)], 10)
    >>> s.last_sent_ms, sorted(s.firing)
    (10, ['a'])
    >>> sent(s, [Waiting("2", "a", "resolved", 20)], 30) is None
    True
    """
    firing = set(state.firing) if state is not None else set()
    for w in sorted(batch, key=lambda w: w.at_ms):
        if w.kind == "firing":
            firing.add(w.key)
        else:
            firing.discard(w.key)
    if not firing:
        return None
    return GroupState(now_ms, frozenset(firing))


def due_batches(
    waiting: dict[str, list[Waiting]],
    states: dict[str, GroupState],
    g: Grouping,
    now_ms: int,
) -> list[str]:
    """The groups (of ``waiting``, by name) whose notifications go now."""
    return [
        name
        for name, items in sorted(waiting.items())
        if items and now_ms >= due_at(min(w.at_ms for w in items), states.get(name), g)
    ]
