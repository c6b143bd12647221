"""The alerts of every tenant: rules, evaluation on an interval, notifications, history.

Rules, key states (with each rule's read position), history, snoozes, silences and the
notifications not yet delivered (the outbox) live in the catalog. An evaluation saves
the new key states, the history and the notifications they owe in one catalog
transaction *before* any is sent, so a restart (even after ``kill -9``) neither
announces a change twice nor loses a notification: the ``Dispatcher`` sends what the
outbox holds, through the sinks' retries, and dead-letters what fails for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import structlog

from headwater.alerts.condition import compile_condition
from headwater.alerts.delivery import Notification, RetryPolicy
from headwater.alerts.dispatch import Dispatcher, Item, make_items
from headwater.alerts.evaluate import Change, Reads, RuleRun, Tracked, advance, read_latest
from headwater.alerts.grouping import group_of
from headwater.alerts.mutes import Silence, Snooze
from headwater.alerts.rules import AlertRule, parse_rule
from headwater.alerts.transports import Transports
from headwater.catalog.sqlite import Catalog
from headwater.errors import BadRequest, Conflict, NotFound
from headwater.model.time import Clock, ms_to_datetime
from headwater.observability import metrics as m
from headwater.sinks.dlq import DLQ_KEY, DLQ_SCHEMA, dlq_table
from headwater.store.ports import ResultStore

log = structlog.get_logger("headwater.alerts")
STOP_GRACE_S = 5.0
TRIM_EVERY = 500  # history entries written between two trims of a rule's history
ORDER_COLUMNS = ("window_end", "window_start", "time", "ts", "timestamp")


def _compile(run: RuleRun, store: ResultStore) -> None:
    """Check the rule against its table now; raises a 400 saying what to fix."""
    rule = run.rule
    schema = store.table_schema(rule.tenant, rule.source)
    if schema is None:
        raise BadRequest(f"table {rule.source!r} does not exist yet; create it first, "
                         "or wait for its pipeline's first results", code="unknown_table")  # fmt: skip
    order = "_offset" if "_offset" in schema.names else None
    order = order or next((c for c in ORDER_COLUMNS if c in schema.names), None)
    if order is None:
        raise BadRequest(f"table {rule.source!r} has no time column ({', '.join(ORDER_COLUMNS)})"
                         " to find each key's latest row", code="bad_alert_source")  # fmt: skip
    run.condition = compile_condition(rule.condition, rule.key, order, schema)
    missing = [c for c in rule.group_by if c not in schema.names]
    if missing:
        raise BadRequest(f"group_by names {', '.join(missing)}, not a column of {rule.source!r}",
                         code="bad_alert_group")  # fmt: skip
    run.stream, run.error = order == "_offset", None


def _rule(spec: dict[str, Any]) -> AlertRule:
    return AlertRule(**spec)


class Alerts:
    def __init__(
        self,
        catalog: Catalog,
        store: ResultStore,
        clock: Clock,
        policy: RetryPolicy,
        history_max_events: int = 10_000,
    ) -> None:
        self._catalog, self._store, self._clock, self.policy = catalog, store, clock, policy
        self._history_max = history_max_events
        self._written: dict[tuple[str, str], int] = {}  # history entries since the last trim
        self._lock = threading.Lock()
        self._replay_lock = asyncio.Lock()
        self._runs: dict[tuple[str, str], RuleRun] = {}
        self._snoozes: dict[str, list[Snooze]] = {}
        self._silences: dict[str, list[Silence]] = {}
        for spec, cursor in catalog.alerts():
            rule = _rule(spec)
            run = RuleRun(rule, None, cursor=cursor)
            states = catalog.alert_states(rule.tenant, rule.name)
            run.keys = {k: Tracked.load(v) for k, v in states.items()}
            self._runs[(rule.tenant, rule.name)] = run
        self._load_mutes()
        self.dispatcher = Dispatcher(catalog, store, clock, Transports(policy), self._rule_of)

    def _rule_of(self, tenant: str, name: str) -> AlertRule | None:
        run = self._runs.get((tenant, name))
        return run.rule if run is not None else None

    # rules -------------------------------------------------------------------------
    def create(
        self, tenant: str, data: Any, tables: set[str], require_channels: bool = True
    ) -> AlertRule:
        rule = parse_rule(tenant, data, self._clock.now_ms(), require_channels)
        if rule.source not in tables:
            raise BadRequest(f"alert reads {rule.source!r}, which is not a table or stream of "
                             "this tenant", code="unknown_table")  # fmt: skip
        if (tenant, rule.name) in self._runs:
            raise Conflict(f"alert {rule.name!r} exists; delete it first", code="name_taken")
        if dlq_table(rule.name) in tables:
            raise BadRequest(f"{dlq_table(rule.name)!r}, the rule's dead-letter table, is taken "
                             "by a stream or table; choose another name", code="name_taken")  # fmt: skip
        run = RuleRun(rule, None)
        _compile(run, self._store)
        self._catalog.put_alert(tenant, rule.name, rule.spec())
        self._store.ensure_table(tenant, dlq_table(rule.name), DLQ_SCHEMA, DLQ_KEY)
        with self._lock:
            self._runs[(tenant, rule.name)] = run
        return rule

    def get(self, tenant: str, name: str) -> RuleRun:
        run = self._runs.get((tenant, name))
        if run is None:
            raise NotFound(f"alert {name!r} does not exist", code="unknown_alert")
        return run

    def in_tenant(self, tenant: str) -> list[RuleRun]:
        return [r for (t, _), r in sorted(self._runs.items()) if t == tenant]

    def drop(self, tenant: str, name: str) -> None:
        self.get(tenant, name)
        with self._lock:
            self._runs.pop((tenant, name), None)
        self._catalog.drop_alert(tenant, name)
        self._store.drop_table(tenant, dlq_table(name))
        with contextlib.suppress(KeyError):
            m.ALERT_FIRING_KEYS.remove(tenant, name)
        self._catalog.drop_alert_mute(tenant, f"snooze:{name}:*")
        for s in self._snoozes.get(tenant, []):
            if s.rule == name and s.key is not None:
                self._catalog.drop_alert_mute(tenant, f"snooze:{name}:{s.key}")
        self._load_mutes()

    def events(self, tenant: str, name: str, limit: int) -> list[dict[str, Any]]:
        self.get(tenant, name)
        return self._catalog.alert_events(tenant, name, limit)

    # mutes -------------------------------------------------------------------------
    def _load_mutes(self) -> None:
        snoozes: dict[str, list[Snooze]] = {}
        silences: dict[str, list[Silence]] = {}
        for tenant, spec in self._catalog.alert_mutes():
            if spec.pop("type") == "snooze":
                snoozes.setdefault(tenant, []).append(Snooze(**spec))
            else:
                silences.setdefault(tenant, []).append(Silence(**spec))
        self._snoozes, self._silences = snoozes, silences

    def snooze(self, tenant: str, name: str, until_ms: int, key: str | None) -> Snooze:
        self.get(tenant, name)
        s = Snooze(name, until_ms, key)
        self._catalog.put_alert_mute(tenant, f"snooze:{name}:{key or '*'}",
                                     {"type": "snooze", "rule": name, "until_ms": until_ms,
                                      "key": key})  # fmt: skip
        self._load_mutes()
        return s

    def snoozes(self, tenant: str, name: str) -> list[Snooze]:
        now = self._clock.now_ms()
        return [s for s in self._snoozes.get(tenant, []) if s.rule == name and s.until_ms > now]

    def add_silence(self, tenant: str, silence: Silence) -> None:
        spec = {"type": "silence", "id": silence.id, "start_ms": silence.start_ms,
                "end_ms": silence.end_ms, "labels": silence.labels, "comment": silence.comment}  # fmt: skip
        self._catalog.put_alert_mute(tenant, silence.id, spec)
        self._load_mutes()

    def silences(self, tenant: str) -> list[Silence]:
        return list(self._silences.get(tenant, []))

    def drop_silence(self, tenant: str, silence_id: str) -> None:
        if not silence_id.startswith("silence_") or not self._catalog.drop_alert_mute(
            tenant, silence_id
        ):
            raise NotFound(f"silence {silence_id!r} does not exist", code="unknown_silence")
        self._load_mutes()

    # evaluation --------------------------------------------------------------------
    def evaluate(self) -> list[Item]:
        """One evaluation of every rule (blocking: run it in a thread); the notifications
        owed, once per channel, saved in the outbox."""
        out: list[Item] = []
        with self._lock:
            runs = list(self._runs.values())
        reads: Reads = {}  # rules over one table read it once per evaluation
        for run in runs:
            started = time.perf_counter()
            try:
                if run.condition is None:  # first evaluation since the start, or a failed one
                    _compile(run, self._store)
                out += self._evaluate(run, reads)
            except Exception as exc:  # the table went away or changed: report, retry later
                if run.error is None:
                    log.warning("alert_evaluation_failed", tenant=run.rule.tenant,
                                rule=run.rule.name, error=str(exc))  # fmt: skip
                run.condition, run.error = None, f"{type(exc).__name__}: {exc}"
                m.ALERT_EVALUATION_ERRORS.labels(run.rule.tenant, run.rule.name).inc()
            m.ALERT_EVALUATION_SECONDS.observe(time.perf_counter() - started)
        return out

    def _evaluate(self, run: RuleRun, reads: Reads | None = None) -> list[Item]:
        r = run.rule
        before = run.cursor
        latest = read_latest(run, self._store, reads)
        now = self._clock.now_ms()
        changes, dirty = advance(run, latest, now, self._snoozes.get(r.tenant, []),
                                 self._silences.get(r.tenant, []))  # fmt: skip
        firing = sum(1 for t in run.keys.values() if t.state.phase == "firing")
        m.ALERT_FIRING_KEYS.labels(r.tenant, r.name).set(firing)
        recorded = [c for c in changes if c.step.change in ("fired", "resolved", "repeated")]
        items = [it for c in recorded if c.step.notify for it in self._items(r, c)]
        if dirty or recorded or run.cursor != before:
            self._catalog.save_alert_progress(
                r.tenant, r.name, run.cursor,
                {k: (t.dump() if t is not None else None) for k, t in dirty.items()},
                [(c.step.at_ms, self._event(r, c)) for c in recorded],
                [(it.id, it.dump()) for it in items],
            )  # fmt: skip
            self._wrote(r.tenant, r.name, len(recorded))
        return items

    def _items(self, r: AlertRule, c: Change) -> list[Item]:
        g = r.grouping
        group = group_of(g.by, r.key, c.key, c.tracked.values) if g is not None else None
        return make_items(r, self._notification(r, c), group)

    def _notification(self, r: AlertRule, c: Change) -> Notification:
        kind = "resolved" if c.step.change == "resolved" else "firing"
        return Notification(r.tenant, r.name, c.key, kind, r.severity,
                            r.render(c.key, c.tracked.values), r.labels, c.tracked.values,
                            c.step.at_ms, c.tracked.state.since_ms)  # fmt: skip

    def _event(self, r: AlertRule, c: Change) -> dict[str, Any]:
        return {"at": ms_to_datetime(c.step.at_ms).isoformat(), "kind": c.step.change,
                "key": c.key, "notify": c.step.notify, "muted": c.step.muted,
                "summary": r.render(c.key, c.tracked.values), "values": c.tracked.values}  # fmt: skip

    def _wrote(self, tenant: str, rule: str, entries: int) -> None:
        """Keep a rule's history to ``history_max_events``, trimming now and then."""
        n = self._written.get((tenant, rule), 0) + entries
        if n >= min(TRIM_EVERY, self._history_max):
            self._catalog.trim_alert_events(tenant, rule, self._history_max)
            n = 0
        self._written[(tenant, rule)] = n

    # the loop ----------------------------------------------------------------------
    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Evaluate every ``interval_s`` and deliver, until ``stop`` is set."""
        d = self.dispatcher
        await asyncio.to_thread(d.load)
        replays = asyncio.create_task(self._finish_replays())
        while not stop.is_set():
            d.add(await asyncio.to_thread(self.evaluate))
            d.dispatch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
        replays.cancel()
        await asyncio.gather(replays, return_exceptions=True)
        await d.drain(STOP_GRACE_S)  # what is not delivered by then stays in the outbox

    # dead letters ------------------------------------------------------------------
    def dead_letters(self, tenant: str, name: str) -> list[dict[str, Any]]:
        self.get(tenant, name)
        return self.dispatcher.letters(tenant, name, "dead")

    async def replay(self, tenant: str, name: str, keys: list[str] | None) -> int:
        """Send the rule's dead letters again (``keys``: those only), each at most once;
        answers how many go (they are delivered in the background)."""
        rule = self.get(tenant, name).rule
        async with self._replay_lock:  # two replays never pick the same letter
            letters = await asyncio.to_thread(self.dispatcher.letters, tenant, name, "dead")
            if keys is not None:
                wanted = set(keys)
                letters = [d for d in letters if d["key"] in wanted]
            marked = await self.dispatcher.mark_replaying(rule, letters) if letters else []
        if marked:
            self.dispatcher.start_replay(rule, marked)
        return len(marked)

    async def _finish_replays(self) -> None:
        """Replays a stop or crash interrupted: their letters are still ``replaying``."""
        for run in list(self._runs.values()):
            r = run.rule
            letters = await asyncio.to_thread(self.dispatcher.letters, r.tenant, r.name,
                                              "replaying")  # fmt: skip
            if letters:
                await self.dispatcher.replay(r, letters)
