"""Reading a rule's new rows and stepping its keys: one evaluation of one rule.

- A *stream* table is read by ``_offset`` from the rule's cursor (the first offset it has
  not seen), so each row is evaluated once; the cursor is saved with the key states.
- A *result* table (a pipeline's output, upserted by key) is read whole, latest row per
  key by its time column, at every evaluation.

A key's condition is decided by its latest row. Keys with no new row keep their last
decision, so ``for`` runs on in processing time while a key sends nothing new. A key's
state is saved when it changes; the values of its newest row are shown at once and
saved with its next change (saving every row's values cost more than the rest of an
evaluation, see benchmarks/alerts.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from headwater.alerts.condition import HOLDS_COLUMN, KEY_COLUMN, Condition, latest_per_key
from headwater.alerts.mutes import Silence, Snooze, muted_now
from headwater.alerts.rules import AlertRule
from headwater.alerts.states import KeyState, Step, step
from headwater.store.ports import ResultStore

READ_ROWS = 100_000  # rows read per store call
HIDDEN = ("_id_hash",)


@dataclass
class Tracked:
    """A key whose condition holds, with the values of the row that last decided it."""

    state: KeyState
    values: dict[str, Any]

    def dump(self) -> dict[str, Any]:
        s = self.state
        return {"phase": s.phase, "since_ms": s.since_ms, "firing_ms": s.firing_ms,
                "notified_ms": s.notified_ms, "values": self.values}  # fmt: skip

    @staticmethod
    def load(d: dict[str, Any]) -> Tracked:
        state = KeyState(d["phase"], d["since_ms"], d["firing_ms"], d["notified_ms"])
        return Tracked(state, d["values"])


@dataclass
class RuleRun:
    """A rule with its compiled condition, read position and the keys that hold."""

    rule: AlertRule
    condition: Condition | None  # None while its table cannot be read (see ``error``)
    stream: bool = True  # read by _offset (else: latest per key of a result table)
    cursor: int | None = None
    # Replaced whole by each evaluation, so readers on other threads see one version.
    keys: dict[str, Tracked] = field(default_factory=dict)
    error: str | None = None  # why the last evaluation failed


@dataclass(frozen=True, slots=True)
class Change:
    key: str
    step: Step
    tracked: Tracked  # the key's state at the change (before it was dropped, for a resolve)


Reads = dict[tuple[Any, ...], pa.Table]


def read_latest(run: RuleRun, store: ResultStore, reads: Reads | None = None) -> pa.Table:
    """The newest row of each key that changed since the last evaluation, with ``__holds``.

    ``reads`` shares store reads between the rules of one evaluation: rules over the same
    table (and, for a stream, at the same position) read its rows once."""
    r, cond = run.rule, run.condition
    assert cond is not None
    cache: Reads = {} if reads is None else reads
    if not run.stream:
        at: tuple[Any, ...] = ("latest", r.tenant, r.source, cond.key, cond.order)
        if at not in cache:
            cache[at] = store.latest_per_key(r.tenant, r.source, [cond.key], cond.order, 1)
        return latest_per_key(cond, cache[at])
    start = run.cursor or 0
    parts = []
    while True:
        at = ("offset", r.tenant, r.source, start)
        if at not in cache:
            cache[at] = store.rows_by_offset(r.tenant, r.source, start, 2**62, READ_ROWS)
        rows = cache[at]
        if rows.num_rows == 0:
            break
        parts.append(latest_per_key(cond, rows))
        start = int(rows.column("_offset")[-1].as_py()) + 1
        if rows.num_rows < READ_ROWS:
            break
    run.cursor = start
    if not parts:
        return pa.table({KEY_COLUMN: pa.array([], pa.string())})
    if len(parts) == 1:
        return parts[0]
    return latest_per_key(cond, pa.concat_tables(parts, promote_options="default"))


def _values(row: dict[str, Any]) -> dict[str, Any]:
    clean = {k: v for k, v in row.items() if not k.startswith("__") and k not in HIDDEN}
    out: dict[str, Any] = orjson.loads(orjson.dumps(clean, default=str))
    return out


def _relevant(latest: pa.Table, tracked: dict[str, Tracked]) -> pa.Table:
    """The rows that can change something: keys whose condition holds, or that have a state
    (a key that neither holds nor had a state stays without one)."""
    if latest.num_rows == 0:
        return latest
    mask = latest.column(HOLDS_COLUMN)
    if tracked:
        known = pc.is_in(latest.column(KEY_COLUMN), value_set=pa.array(list(tracked), pa.string()))
        mask = pc.or_(mask, known)
    return latest.filter(mask)


def advance(
    run: RuleRun,
    latest: pa.Table,
    now_ms: int,
    snoozes: list[Snooze],
    silences: list[Silence],
) -> tuple[list[Change], dict[str, Tracked | None]]:
    """Step every key that has a new row or holds; returns the changes and changed states."""
    r = run.rule
    fresh = {row[KEY_COLUMN]: row for row in _relevant(latest, run.keys).to_pylist()}
    changes: list[Change] = []
    dirty: dict[str, Tracked | None] = {}
    keys = dict(run.keys)
    rule_muted, muted_keys = muted_now(r.name, r.labels, now_ms, snoozes, silences)
    for key in set(fresh) | set(keys):
        old = keys.get(key)
        row = fresh.get(key)
        holds = bool(row[HOLDS_COLUMN]) if row is not None else old is not None
        values = _values(row) if row is not None else (old.values if old else {})
        muted = rule_muted or key in muted_keys
        new, steps = step(old.state if old else None, holds, now_ms, r.for_ms, muted, r.repeat_ms)
        tracked = Tracked(new, values) if new is not None else None
        at = new if new is not None else (old.state if old is not None else None)
        changes += [Change(key, s, Tracked(at, values)) for s in steps if at is not None]
        if tracked is None:
            if old is not None:
                keys.pop(key)
                dirty[key] = None
        elif old is None or old.state != new:
            keys[key] = tracked
            dirty[key] = tracked
        elif row is not None and old.values != values:  # newer values, same state: kept in
            keys[key] = tracked  # memory, saved with the key's next change (not per row)
    run.keys = keys
    return changes, dirty
