"""The alert state machine against a reference that recomputes each key from its history."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.alerts.mutes import Silence, Snooze, is_muted, muted_now
from headwater.alerts.states import KeyState, step

# one evaluation: (milliseconds since the previous one, condition holds, muted)
TRACE = st.lists(
    st.tuples(st.integers(0, 3000), st.booleans(), st.booleans()), min_size=1, max_size=60
)


def reference(trace: list[tuple[int, bool, bool]], for_ms: int) -> list[tuple[int, str]]:
    """The notifications owed, from the history alone: (evaluation index, kind)."""
    out: list[tuple[int, str]] = []
    now, streak_start, firing, announced = 0, None, False, False
    for i, (dt, holds, muted) in enumerate(trace):
        now += dt
        if not holds:
            if firing and announced:
                out.append((i, "resolved"))
            streak_start, firing, announced = None, False, False
            continue
        streak_start = now if streak_start is None else streak_start
        firing = firing or now - streak_start >= for_ms
        if firing and not announced and not muted:
            out.append((i, "fired"))
            announced = True
    return out


def run(trace: list[tuple[int, bool, bool]], for_ms: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    state: KeyState | None = None
    now = 0
    for i, (dt, holds, muted) in enumerate(trace):
        now += dt
        state, steps = step(state, holds, now, for_ms, muted)
        out += [(i, s.change) for s in steps if s.notify]
    return out


@settings(max_examples=examples(400), deadline=None)
@given(TRACE, st.integers(0, 5000))
def test_notifications_match_the_reference(
    trace: list[tuple[int, bool, bool]], for_ms: int
) -> None:
    assert run(trace, for_ms) == reference(trace, for_ms)


@settings(max_examples=examples(200), deadline=None)
@given(TRACE, st.integers(0, 5000))
def test_fires_and_resolves_alternate(trace: list[tuple[int, bool, bool]], for_ms: int) -> None:
    kinds = [k for _, k in run(trace, for_ms)]
    assert kinds == ["fired", "resolved"] * (len(kinds) // 2) + ["fired"] * (len(kinds) % 2)


def test_for_waits_until_the_condition_held_that_long() -> None:
    state, steps = step(None, True, 1000, for_ms=2000)
    assert (
        state is not None and state.phase == "pending" and [s.change for s in steps] == ["pending"]
    )
    state, steps = step(state, True, 2999, for_ms=2000)
    assert state is not None and state.phase == "pending" and steps == []
    state, steps = step(state, True, 3000, for_ms=2000)
    assert state is not None and state.phase == "firing" and state.firing_ms == 3000
    assert [(s.change, s.notify) for s in steps] == [("fired", True)]
    state, steps = step(state, False, 4000, for_ms=2000)
    assert state is None and [(s.change, s.notify) for s in steps] == [("resolved", True)]


def test_pending_that_stops_holding_is_cleared_silently() -> None:
    state, _ = step(None, True, 0, for_ms=5000)
    state, steps = step(state, False, 100, for_ms=5000)
    assert state is None and [(s.change, s.notify) for s in steps] == [("cleared", False)]


def test_repeat_interval_announces_a_still_firing_key_again() -> None:
    state, _ = step(None, True, 0, for_ms=0, repeat_ms=1000)
    seen = []
    for now in range(100, 3100, 100):
        state, steps = step(state, True, now, for_ms=0, repeat_ms=1000)
        seen += [(now, s.change) for s in steps]
    assert seen == [(1000, "repeated"), (2000, "repeated"), (3000, "repeated")]


def test_fired_while_muted_is_announced_when_the_mute_ends() -> None:
    state, steps = step(None, True, 0, for_ms=0, muted=True)
    assert [(s.change, s.notify, s.muted) for s in steps] == [("fired", False, True)]
    state, steps = step(state, True, 10, for_ms=0, muted=True)
    assert steps == []
    state, steps = step(state, True, 20, for_ms=0, muted=False)
    assert [(s.change, s.notify) for s in steps] == [("fired", True)]


def test_snoozes_and_silences() -> None:
    snoozes = [Snooze("hot", 1000, key="a"), Snooze("cold", 500)]
    silences = [Silence("s1", 2000, 3000, {"team": "ops"})]
    assert is_muted("hot", "a", {}, 999, snoozes, [])
    assert not is_muted("hot", "a", {}, 1000, snoozes, [])
    assert not is_muted("hot", "b", {}, 0, snoozes, [])
    assert is_muted("cold", "any", {}, 499, snoozes, [])
    assert is_muted("x", "k", {"team": "ops", "sev": "1"}, 2500, [], silences)
    assert not is_muted("x", "k", {"team": "db"}, 2500, [], silences)
    assert not is_muted("x", "k", {"team": "ops"}, 3000, [], silences)
    assert is_muted("x", "k", {}, 2000, [], [Silence("all", 2000, 2001)])


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["hot", "cold"]), st.integers(0, 3000),
                       st.none() | st.sampled_from(["a", "b"]))),
    st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 3000), st.booleans())),
    st.integers(0, 3000),
)  # fmt: skip
def test_muted_now_agrees_with_is_muted(
    snoozes: list[tuple[str, int, str | None]], silences: list[tuple[int, int, bool]], now: int
) -> None:
    sn = [Snooze(r, u, k) for r, u, k in snoozes]
    si = [Silence(f"s{i}", a, b, {"team": "ops"} if ops else {}) for i, (a, b, ops) in
          enumerate(silences)]  # fmt: skip
    whole, keys = muted_now("hot", {"team": "db"}, now, sn, si)
    for key in ("a", "b", "c"):
        assert (whole or key in keys) == is_muted("hot", key, {"team": "db"}, now, sn, si)
