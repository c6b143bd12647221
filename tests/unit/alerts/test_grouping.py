"""Grouping over condition sequences with a manual clock: every notification the state
machine owes is sent exactly once, in order per key, never before ``group_wait`` in a new
group, never closer than ``group_interval`` to the group's previous send, and as soon as
its group is due."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.alerts.grouping import Grouping, GroupState, Waiting, due_at, due_batches, sent
from headwater.alerts.states import KeyState, step

KEYS = ("a", "b", "c")
# one evaluation: (milliseconds since the previous one, which keys' conditions hold)
TRACE = st.lists(
    st.tuples(st.integers(0, 4000), st.frozensets(st.sampled_from(KEYS))), min_size=1,
    max_size=50,
)  # fmt: skip
GROUPING = st.builds(Grouping, st.just(()), st.integers(0, 5000), st.integers(1, 8000))


def simulate(
    trace: list[tuple[int, frozenset[str]]], g: Grouping, for_ms: int, repeat_ms: int | None
) -> tuple[list[Waiting], list[tuple[int, list[Waiting]]], list[GroupState | None]]:
    """Evaluations step each key; notifications wait in one group; due groups send."""
    states: dict[str, KeyState | None] = dict.fromkeys(KEYS)
    made: list[Waiting] = []
    sends: list[tuple[int, list[Waiting]]] = []
    before: list[GroupState | None] = []  # the group's state before each send
    waiting: list[Waiting] = []
    group: GroupState | None = None
    now = 0
    end = sum(dt for dt, _ in trace) + g.wait_ms + g.interval_ms
    ticks = [(dt, holds) for dt, holds in trace] + [(500, None)] * (end // 500 + 2)
    for dt, holds in ticks:
        now += dt
        for k in KEYS if holds is not None else ():
            states[k], steps = step(states[k], k in holds, now, for_ms, repeat_ms=repeat_ms)
            for s in steps:
                if s.notify:
                    kind = "resolved" if s.change == "resolved" else "firing"
                    w = Waiting(f"{k}:{kind}:{now}:{len(made)}", k, kind, now)
                    made.append(w)
                    waiting.append(w)
        if due_batches({"": waiting}, {"": group} if group else {}, g, now):
            sends.append((now, waiting))
            before.append(group)
            group = sent(group, waiting, now)
            waiting = []
    assert waiting == []
    return made, sends, before


@settings(max_examples=examples(300), deadline=None)
@given(TRACE, GROUPING, st.integers(0, 3000), st.none() | st.integers(1000, 6000))
def test_grouped_sends(
    trace: list[tuple[int, frozenset[str]]], g: Grouping, for_ms: int, repeat_ms: int | None
) -> None:
    made, sends, before = simulate(trace, g, for_ms, repeat_ms)
    flat = [w for _, batch in sends for w in batch]
    assert sorted(w.id for w in flat) == sorted(w.id for w in made)  # each once, none lost
    for k in KEYS:  # per key, in the order made, fires and resolves alternating
        mine = [w for w in flat if w.key == k]
        assert mine == [w for w in made if w.key == k]
        kinds = [w.kind for i, w in enumerate(mine) if i == 0 or w.kind != mine[i - 1].kind]
        assert kinds == ["firing", "resolved"] * (len(kinds) // 2) + ["firing"] * (len(kinds) % 2)
    for (at, batch), prior in zip(sends, before, strict=True):
        first = min(w.at_ms for w in batch)
        assert at >= due_at(first, prior, g)
        if prior is None:
            assert at >= first + g.wait_ms  # a new group waits group_wait
        else:
            assert at - prior.last_sent_ms >= g.interval_ms
        assert all(w.at_ms <= at for w in batch)


@settings(max_examples=examples(200), deadline=None)
@given(TRACE, GROUPING)
def test_sent_at_the_first_evaluation_once_due(
    trace: list[tuple[int, frozenset[str]]], g: Grouping
) -> None:
    """No evaluation between a group's due time and its send: nothing waits longer."""
    made, sends, before = simulate(trace, g, 0, None)
    ticks = sorted({w.at_ms for w in made} | {at for at, _ in sends})
    for (at, batch), prior in zip(sends, before, strict=True):
        due = due_at(min(w.at_ms for w in batch), prior, g)
        assert not [t for t in ticks if due <= t < at and t >= min(w.at_ms for w in batch)]


def test_a_group_ends_when_every_key_resolved() -> None:
    g = Grouping((), 1000, 5000)
    s = sent(None, [Waiting("1", "a", "firing", 0), Waiting("2", "b", "firing", 0)], 1000)
    assert s is not None and s.firing == {"a", "b"} and due_at(1500, s, g) == 6000
    s = sent(s, [Waiting("3", "a", "resolved", 2000)], 6000)
    assert s is not None and s.firing == {"b"}
    assert sent(s, [Waiting("4", "b", "resolved", 7000)], 11_000) is None
    assert due_at(12_000, None, g) == 13_000  # a new group: group_wait again
    assert due_batches({"x": [Waiting("5", "c", "firing", 12_000)]}, {}, g, 12_999) == []
    assert due_batches({"x": [Waiting("5", "c", "firing", 12_000)]}, {}, g, 13_000) == ["x"]
