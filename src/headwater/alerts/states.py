"""The life of one alert, per (rule, key): a pure state machine with the clock passed in.

Each evaluation tells the machine whether the key's condition holds *now* and whether
its notifications are muted (snoozed or silenced). The machine answers the key's new
state and the changes to record::

    ok --holds--> pending --held for `for`--> firing --stops holding--> ok (resolved)
         pending --stops holding--> ok (cleared, never announced)

- ``for`` is measured in processing time: a key fires at the first evaluation where the
  condition has held, at every evaluation since the one where it started holding, for
  at least ``for_ms``. ``for_ms == 0`` fires at the first evaluation that holds.
- One notification per change: a fire when the key starts firing, a resolve when it
  stops. With ``repeat_ms`` a key still firing is announced again every ``repeat_ms``.
- Muted notifications are not sent. A key that started firing while muted is announced
  at the first evaluation after the mute ends, if it still fires. A resolve is announced
  exactly when its fire was, muted or not: receivers see fires and resolves alternate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Phase = Literal["pending", "firing"]
Change = Literal["pending", "cleared", "fired", "resolved", "repeated"]


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key whose condition holds; keys whose condition does not hold have no state."""

    phase: Phase
    since_ms: int  # when the condition started holding
    firing_ms: int | None = None  # when it started firing
    notified_ms: int | None = None  # when its fire was last announced (None: not yet)


@dataclass(frozen=True, slots=True)
class Step:
    """What happened at one evaluation: the change (if any) and whether to notify."""

    change: Change
    at_ms: int
    notify: bool  # send a notification for this change
    muted: bool = False  # a notification was due but the key is snoozed or silenced


def step(
    state: KeyState | None,
    holds: bool,
    now_ms: int,
    for_ms: int,
    muted: bool = False,
    repeat_ms: int | None = None,
) -> tuple[KeyState | None, list[Step]]:
    """Advance one key by one evaluation; returns its new state and what changed."""
    if not holds:
        if state is None:
            return None, []
        if state.phase == "pending":
            return None, [Step("cleared", now_ms, notify=False)]
        # The all-clear of an announced fire is sent even while muted, so that every
        # receiver sees fires and resolves alternate.
        return None, [Step("resolved", now_ms, notify=state.notified_ms is not None)]
    steps: list[Step] = []
    if state is None:
        state = KeyState("pending", now_ms)
        if for_ms > 0:
            return state, [Step("pending", now_ms, notify=False)]
    if state.phase == "pending":
        if now_ms - state.since_ms < for_ms:
            return state, []
        state = replace(state, phase="firing", firing_ms=now_ms)
        steps.append(Step("fired", now_ms, notify=not muted, muted=muted))
        if not muted:
            state = replace(state, notified_ms=now_ms)
        return state, steps
    # firing and still holding
    if muted:
        return state, []
    if state.notified_ms is None:  # fired while muted: announce it now
        return replace(state, notified_ms=now_ms), [Step("fired", now_ms, notify=True)]
    if repeat_ms is not None and now_ms - state.notified_ms >= repeat_ms:
        return replace(state, notified_ms=now_ms), [Step("repeated", now_ms, notify=True)]
    return state, []
