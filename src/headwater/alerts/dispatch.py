"""Delivering notifications: from the outbox, grouped, to channels, or to the dead letters.

An evaluation saves each notification, once per channel of its rule, in the catalog's
outbox in the same transaction as the key states it announces (``save_alert_progress``),
so a notification due is never lost, even to ``kill -9``: a restart sends what the
outbox holds. The ``Dispatcher`` sends what is due (at once, or when its group is due,
see ``grouping``) through the channel's transport (the sinks' retries, ``Retry-After``
and circuit breakers). A message accepted is removed from the outbox with a
``notified`` history entry; one that failed for good (a 4xx, or its retries exhausted)
goes to the rule's dead-letter table ``<rule>_dlq`` (queryable like any table,
replayable) and is removed with a ``failed`` entry. A crash after a send and before its
removal sends it again with the same id: delivery is at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from headwater.alerts.channels import Batch, Message, messages
from headwater.alerts.delivery import Notification
from headwater.alerts.grouping import GroupState, Waiting, due_at, sent
from headwater.alerts.rules import AlertRule
from headwater.alerts.transports import Transports
from headwater.catalog.sqlite import Catalog
from headwater.model.time import Clock, ms_to_datetime
from headwater.observability import metrics as m
from headwater.sinks.dlq import DLQ_KEY, DLQ_SCHEMA, dlq_table, to_table
from headwater.sinks.http import Outcome
from headwater.store.ports import ResultStore, ResultWrite, RowQuery

log = structlog.get_logger("headwater.alerts")
GroupId = tuple[str, str, int, str]  # tenant, rule, channel, group


@dataclass(frozen=True, slots=True)
class Item:
    """One notification for one channel of a rule, waiting in the outbox."""

    id: str
    tenant: str
    rule: str
    channel: int
    group: str | None  # None: the rule does not group
    n: Notification

    def dump(self) -> dict[str, Any]:
        return {"channel": self.channel, "group": self.group, "n": self.n.dump()}

    @staticmethod
    def load(tenant: str, rule: str, item_id: str, d: dict[str, Any]) -> Item:
        return Item(item_id, tenant, rule, d["channel"], d["group"], Notification.load(d["n"]))

    @property
    def waiting(self) -> Waiting:
        return Waiting(self.id, self.n.key, self.n.kind, self.n.at_ms)


def make_items(rule: AlertRule, n: Notification, group: str | None) -> list[Item]:
    return [Item(f"{n.id}:{i}", rule.tenant, rule.name, i, group, n)
            for i in range(len(rule.channels))]  # fmt: skip


class Dispatcher:
    """Runs on the alerts' event loop; ``add`` and ``dispatch`` are called from it."""

    def __init__(
        self,
        catalog: Catalog,
        store: ResultStore,
        clock: Clock,
        transports: Transports,
        rule_of: Callable[[str, str], AlertRule | None],
    ) -> None:
        self._catalog, self._store, self._clock = catalog, store, clock
        self.transports, self._rule_of = transports, rule_of
        self._waiting: dict[GroupId, list[Item]] = {}
        self._states: dict[GroupId, GroupState] = {}
        self._busy: set[GroupId] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> int:
        return sum(len(v) for v in self._waiting.values())

    def load(self) -> None:
        """What the outbox holds (notifications a stop or crash left undelivered)."""
        self._waiting.clear()
        self.add([Item.load(*row) for row in self._catalog.alert_outbox()])

    def add(self, items: list[Item]) -> None:
        for it in items:  # ungrouped: one queue per key, so a resolve never overtakes its fire
            group = it.group if it.group is not None else "\x00" + it.n.key
            self._waiting.setdefault((it.tenant, it.rule, it.channel, group), []).append(it)
        m.ALERT_OUTBOX_ENTRIES.set(self.pending)

    def dispatch(self) -> None:
        """Start sending every batch due now."""
        now = self._clock.now_ms()
        for gid, items in list(self._waiting.items()):
            if gid in self._busy:
                continue
            rule = self._rule_of(gid[0], gid[1])
            if rule is None:  # deleted: its outbox went with it
                del self._waiting[gid]
                continue
            g = rule.grouping
            if g is None:  # one at a time, oldest first
                items.sort(key=lambda i: i.n.at_ms)
                items, rest = items[:1], items[1:]
            else:
                first = min(i.n.at_ms for i in items)
                if now < due_at(first, self._states.get(gid), g):
                    continue
                rest = []
            if rest:
                self._waiting[gid] = rest
            else:
                del self._waiting[gid]
            self._busy.add(gid)
            task = asyncio.create_task(self._deliver(gid, rule, items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, gid: GroupId, rule: AlertRule, items: list[Item]) -> None:
        try:
            channel = rule.channels[gid[2]]
            batch = Batch(tuple((i.id, i.n) for i in items), items[0].group)
            transport = self.transports.of(channel)
            results: list[tuple[Message, Outcome]] = []
            for msg in messages(channel, batch):  # in order: a resolve never overtakes its fire
                results.append((msg, await transport.send(msg.body, msg.key)))
            await asyncio.to_thread(self._finish, rule, channel["kind"], items, results)
            if items[0].group is not None:
                st = sent(self._states.get(gid), [i.waiting for i in items], self._clock.now_ms())
                if st is None:
                    self._states.pop(gid, None)
                else:
                    self._states[gid] = st
        except Exception as exc:  # e.g. the catalog could not be written: send again later
            log.error("alert_delivery_failed", rule=rule.name, error=f"{type(exc).__name__}: {exc}")
            self.add(items)
        finally:
            self._busy.discard(gid)
            m.ALERT_OUTBOX_ENTRIES.set(self.pending)

    def _finish(
        self, rule: AlertRule, kind: str, items: list[Item], results: list[tuple[Message, Outcome]]
    ) -> None:
        """Dead letters first, then the outbox entries go with their history entries."""
        by_id = {i.id: i for i in items}
        now = self._clock.now_ms()
        events: list[tuple[int, dict[str, Any]]] = []
        letters: list[dict[str, object]] = []
        for msg, out in results:
            for item_id in msg.ids:
                it = by_id[item_id]
                error = None if out.ok else (out.error or "failed")
                events.append((now, {"at": ms_to_datetime(now).isoformat(),
                                     "kind": "notified" if out.ok else "failed", "key": it.n.key,
                                     "status": it.n.kind, "channel": kind,
                                     "attempts": out.attempts, "error": error,
                                     "batch": len(items)}))  # fmt: skip
                m.ALERT_NOTIFICATIONS.labels(kind, "delivered" if out.ok else "failed").inc()
                if not out.ok:
                    letters.append(letter(it, kind, out))
        if letters and self._rule_of(rule.tenant, rule.name) is rule:  # not deleted meanwhile
            self.write_letters(rule.tenant, rule.name, letters)
        self._catalog.finish_alert_outbox(rule.tenant, rule.name, list(by_id), events)

    def write_letters(self, tenant: str, rule: str, letters: list[dict[str, object]]) -> None:
        if self._store.table_schema(tenant, dlq_table(rule)) is None:
            self._store.ensure_table(tenant, dlq_table(rule), DLQ_SCHEMA, DLQ_KEY)
        write = ResultWrite(f"alert:{rule}", {}, upserts={dlq_table(rule): (to_table(letters),
                                                                            DLQ_KEY)})  # fmt: skip
        self._store.commit(tenant, write)
        m.ALERT_DEAD_LETTERS.labels(tenant, rule).inc(
            sum(1 for x in letters if x["state"] == "dead")
        )

    # replay ------------------------------------------------------------------------
    def letters(self, tenant: str, rule: str, state: str) -> list[dict[str, Any]]:
        if self._store.table_schema(tenant, dlq_table(rule)) is None:
            return []
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self._store.read_rows(RowQuery(tenant, dlq_table(rule),
                                                  filters={"state": state}, limit=10_000,
                                                  cursor=cursor))  # fmt: skip
            out += page.rows.to_pylist()
            cursor = page.next_cursor
            if cursor is None:
                return out

    async def mark_replaying(
        self, rule: AlertRule, letters: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Before a replay: another replay skips these, a restart finishes them."""
        marked = [{**d, "state": "replaying"} for d in letters]
        await asyncio.to_thread(self.write_letters, rule.tenant, rule.name, marked)
        return marked

    def start_replay(self, rule: AlertRule, marked: list[dict[str, Any]]) -> None:
        task = asyncio.create_task(self.replay(rule, marked))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def replay(self, rule: AlertRule, marked: list[dict[str, Any]]) -> dict[str, int]:
        """Send letters marked ``replaying`` again: ``replayed`` when a channel accepts
        them (never sent again), else ``dead`` again with the new attempts and error."""
        tenant, name = rule.tenant, rule.name
        done = await asyncio.gather(*(self._resend(rule, d) for d in marked))
        await asyncio.to_thread(self.write_letters, tenant, name, list(done))
        ok = sum(1 for d in done if d["state"] == "replayed")
        now = self._clock.now_ms()
        events = []
        for d in done:
            key = orjson.loads(str(d["row"]))["n"]["key"]
            replayed = d["state"] == "replayed"
            events.append((now, {"at": ms_to_datetime(now).isoformat(),
                                 "kind": "replayed" if replayed else "failed", "key": key,
                                 "attempts": d["attempts"],
                                 "error": None if replayed else d["error"]}))  # fmt: skip
        await asyncio.to_thread(self._catalog.finish_alert_outbox, tenant, name, [], events)
        return {"replayed": ok, "dead": len(done) - ok}

    async def _resend(self, rule: AlertRule, d: dict[str, Any]) -> dict[str, object]:
        it = Item.load(rule.tenant, rule.name, str(d["key"]), orjson.loads(str(d["row"])))
        if it.channel >= len(rule.channels):
            return {**d, "state": "dead", "error": "the rule has no such channel"}
        channel = rule.channels[it.channel]
        transport = self.transports.of(channel)
        out = Outcome(ok=True, attempts=0)
        for msg in messages(channel, Batch(((it.id, it.n),), it.group)):
            out = await transport.send(msg.body, msg.key)
        if out.ok:
            return {**d, "state": "replayed"}
        return {**d, "state": "dead", "attempts": int(d.get("attempts") or 0) + out.attempts,
                "last_status": out.status, "last_body": out.body, "error": out.error,
                "last_failure": out.last_failure_ms}  # fmt: skip

    # stop --------------------------------------------------------------------------
    async def drain(self, grace_s: float) -> None:
        """A moment for messages in flight; what is left stays in the outbox."""
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*late, return_exceptions=True)
        await self.transports.close()


def letter(it: Item, kind: str, out: Outcome) -> dict[str, object]:
    """A dead-letter row: the outbox item (notification and channel) and the last failure."""
    row = {**it.dump(), "kind": kind}
    return {
        "key": it.id, "offset": it.n.at_ms, "row": orjson.dumps(row).decode(),
        "attempts": out.attempts, "last_status": out.status, "last_body": out.body,
        "error": out.error, "first_failure": out.first_failure_ms,
        "last_failure": out.last_failure_ms, "state": "dead",
    }  # fmt: skip
