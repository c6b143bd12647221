"""The frozen description of a join of two streams (part of a ``Plan``).

The joined rows carry every column of both sides, named ``<alias>.<column>``
(``a.ts``, ``b.device_id``); the rest of the plan (filter, projection, aggregation)
reads them under those names.

- ``interval``: ``left.ts - right.ts`` within ``[lower_ms, upper_ms]`` (from ``a.ts
  BETWEEN b.ts - INTERVAL ... AND b.ts + INTERVAL ...``); a row is kept while a row of
  the other side that is not late could still match it.
- ``regular``: no time bound; a row is kept for ``ttl_ms`` of event time
  (``WITH (state_ttl = '1 hour')``).
- ``window``: each side is a windowed aggregate (a subquery); rows of one window meet
  when both sides have closed it: an interval join on ``window_end`` with no slack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from headwater.engine.plan import Plan

JoinKind = Literal["interval", "regular", "window"]
JoinHow = Literal["inner", "left"]


@dataclass(frozen=True, slots=True)
class JoinSide:
    """One input of a join: the stream, its alias and the event-time column; ``plan`` when
    the input is a subquery (a windowed aggregate of ``stream``)."""

    stream: str
    alias: str
    time_column: str
    plan: Plan | None = None


@dataclass(frozen=True, slots=True)
class StreamJoin:
    kind: JoinKind
    how: JoinHow
    left: JoinSide
    right: JoinSide
    condition: str  # the ON condition, DuckDB SQL over the two aliases
    lower_ms: int = 0
    upper_ms: int = 0
    ttl_ms: int = 0

    def column(self, alias: str, name: str) -> str:
        """The name a side's column has among the joined rows."""
        return f"{alias}.{name}"
