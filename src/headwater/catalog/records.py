"""Catalog records of alert rules and ONNX models: a part of ``Catalog`` kept apart.

``Catalog`` inherits these methods; they use its SQLite connection and lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import msgspec

from headwater.errors import Conflict


class AlertsAndModels:
    _db: sqlite3.Connection
    _lock: threading.Lock

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # Catalog's

    # alerts: rules, per-key states with the rule's read position, history, mutes --------
    def put_alert(self, tenant: str, name: str, spec: dict[str, Any]) -> None:
        try:
            self._q(
                "INSERT INTO alert_rules (tenant, name, spec) VALUES (?,?,?)",
                (tenant, name, msgspec.json.encode(spec).decode()),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"alert {name!r} exists; delete it first", code="name_taken") from exc

    def alerts(self) -> list[tuple[dict[str, Any], int | None]]:
        """Every rule's spec and read position, of every tenant."""
        rows = self._q("SELECT spec, cursor FROM alert_rules ORDER BY tenant, name")
        return [(msgspec.json.decode(spec), cursor) for spec, cursor in rows]

    def drop_alert(self, tenant: str, name: str) -> None:
        with self._lock:
            for table, col in (("alert_rules", "name"), ("alert_states", "rule"),
                               ("alert_events", "rule"), ("alert_outbox", "rule")):  # fmt: skip
                self._db.execute(f"DELETE FROM {table} WHERE tenant = ? AND {col} = ?",
                                 (tenant, name))  # fmt: skip

    def alert_states(self, tenant: str, rule: str) -> dict[str, dict[str, Any]]:
        rows = self._q(
            "SELECT key, state FROM alert_states WHERE tenant = ? AND rule = ?", (tenant, rule)
        )
        return {k: msgspec.json.decode(v) for k, v in rows}

    def save_alert_progress(
        self,
        tenant: str,
        rule: str,
        cursor: int | None,
        states: dict[str, dict[str, Any] | None],
        events: list[tuple[int, dict[str, Any]]],
        outbox: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """One transaction: the rule's read position, changed key states (None: gone),
        history, and the notifications to deliver (``outbox``: id, item), kept until a
        channel accepts them or they are dead letters (``finish_alert_outbox``)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute("UPDATE alert_rules SET cursor = ? WHERE tenant = ? AND name = ?",
                                 (cursor, tenant, rule))  # fmt: skip
                if cur.rowcount == 0:  # deleted meanwhile: keep nothing of it
                    db.execute("ROLLBACK")
                    return
                for key, st in states.items():
                    if st is None:
                        db.execute("DELETE FROM alert_states WHERE tenant = ? AND rule = ? "
                                   "AND key = ?", (tenant, rule, key))  # fmt: skip
                    else:
                        db.execute("INSERT OR REPLACE INTO alert_states VALUES (?,?,?,?)",
                                   (tenant, rule, key, msgspec.json.encode(st).decode()))  # fmt: skip
                db.executemany("INSERT INTO alert_events VALUES (?,?,?,?)",
                               [(tenant, rule, at, msgspec.json.encode(e).decode())
                                for at, e in events])  # fmt: skip
                db.executemany("INSERT OR REPLACE INTO alert_outbox VALUES (?,?,?,?)",
                               [(tenant, rule, i, msgspec.json.encode(item).decode())
                                for i, item in outbox])  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def add_alert_events(self, tenant: str, rule: str, events: list[tuple[int, Any]]) -> None:
        """Append to the history of a rule that exists (a deleted rule's stays deleted)."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO alert_events SELECT ?, ?, ?, ? WHERE EXISTS "
                "(SELECT 1 FROM alert_rules WHERE tenant = ? AND name = ?)",
                [(tenant, rule, at, msgspec.json.encode(e).decode(), tenant, rule)
                 for at, e in events],
            )  # fmt: skip

    def alert_outbox(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        """Every notification not yet delivered nor dead-lettered: (tenant, rule, id, item)."""
        rows = self._q("SELECT tenant, rule, id, item FROM alert_outbox ORDER BY rowid")
        return [(t, r, i, msgspec.json.decode(item)) for t, r, i, item in rows]

    def finish_alert_outbox(
        self, tenant: str, rule: str, ids: list[str], events: list[tuple[int, Any]]
    ) -> None:
        """One transaction: these notifications are done (delivered or dead letters), and
        their history entries (only while the rule exists)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM alert_outbox WHERE tenant = ? AND rule = ? AND id = ?",
                               [(tenant, rule, i) for i in ids])  # fmt: skip
                db.executemany(
                    "INSERT INTO alert_events SELECT ?, ?, ?, ? WHERE EXISTS "
                    "(SELECT 1 FROM alert_rules WHERE tenant = ? AND name = ?)",
                    [(tenant, rule, at, msgspec.json.encode(e).decode(), tenant, rule)
                     for at, e in events],
                )  # fmt: skip
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def trim_alert_events(self, tenant: str, rule: str, keep: int) -> int:
        """Forget all but the newest ``keep`` history entries of a rule; how many went."""
        with self._lock:
            return self._db.execute(
                "DELETE FROM alert_events WHERE tenant = ? AND rule = ? AND at_ms < (SELECT "
                "at_ms FROM alert_events WHERE tenant = ? AND rule = ? ORDER BY at_ms DESC "
                "LIMIT 1 OFFSET ?)",
                (tenant, rule, tenant, rule, keep - 1),
            ).rowcount

    def alert_events(self, tenant: str, rule: str, limit: int) -> list[dict[str, Any]]:
        """Newest first."""
        rows = self._q(
            "SELECT event FROM alert_events WHERE tenant = ? AND rule = ? "
            "ORDER BY at_ms DESC, rowid DESC LIMIT ?",
            (tenant, rule, limit),
        )
        return [msgspec.json.decode(r[0]) for r in rows]

    def put_alert_mute(self, tenant: str, mute_id: str, spec: dict[str, Any]) -> None:
        self._q("INSERT OR REPLACE INTO alert_mutes VALUES (?,?,?)",
                (tenant, mute_id, msgspec.json.encode(spec).decode()))  # fmt: skip

    def drop_alert_mute(self, tenant: str, mute_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM alert_mutes WHERE tenant = ? AND id = ?", (tenant, mute_id)
            )
            return cur.rowcount == 1

    def alert_mutes(self) -> list[tuple[str, dict[str, Any]]]:
        """Every snooze and silence: (tenant, spec)."""
        rows = self._q("SELECT tenant, spec FROM alert_mutes ORDER BY tenant, id")
        return [(t, msgspec.json.decode(s)) for t, s in rows]

    # models (ONNX files live under the data dir; their description here) ----------------
    def add_model_version(self, tenant: str, name: str, spec: dict[str, Any], now_ms: int) -> int:
        """Record a new version of model ``name`` (1 for a new name); returns the version."""
        with self._lock:
            row = self._db.execute(
                "INSERT INTO models (tenant, name, version, spec, created_ms) SELECT ?, ?, "
                "coalesce(max(version), 0) + 1, ?, ? FROM models WHERE tenant = ? AND name = ? "
                "RETURNING version",
                (tenant, name, msgspec.json.encode(spec).decode(), now_ms, tenant, name),
            ).fetchone()
        return int(row[0])

    def model_versions(
        self, tenant: str, name: str | None = None
    ) -> list[tuple[str, int, dict[str, Any], int]]:
        """(name, version, spec, created_ms) of the tenant's models (or one), oldest first."""
        sql = "SELECT name, version, spec, created_ms FROM models WHERE tenant = ?"
        args: tuple[Any, ...] = (tenant,)
        if name is not None:
            sql, args = sql + " AND name = ?", (tenant, name)
        rows = self._q(sql + " ORDER BY name, version", args)
        return [(str(n), int(v), msgspec.json.decode(s), int(c)) for n, v, s, c in rows]

    def drop_model_version(self, tenant: str, name: str, version: int) -> None:
        self._q("DELETE FROM models WHERE tenant = ? AND name = ? AND version = ?",
                (tenant, name, version))  # fmt: skip

    def drop_model(self, tenant: str, name: str) -> None:
        self._q("DELETE FROM models WHERE tenant = ? AND name = ?", (tenant, name))

    def set_pipeline_models(self, tenant: str, pipeline: str, pins: dict[str, int]) -> None:
        """The model versions a pipeline was created with (replacing any earlier pins)."""
        self._q("DELETE FROM pipeline_models WHERE tenant = ? AND pipeline = ?", (tenant, pipeline))
        for model, version in pins.items():
            self._q(
                "INSERT INTO pipeline_models VALUES (?, ?, ?, ?)",
                (tenant, pipeline, model, version),
            )

    def pipeline_models(self, tenant: str, pipeline: str) -> dict[str, int]:
        rows = self._q("SELECT model, version FROM pipeline_models WHERE tenant = ? AND pipeline = ?",
                       (tenant, pipeline))  # fmt: skip
        return {str(m): int(v) for m, v in rows}

    def model_users(self, tenant: str, model: str) -> list[str]:
        """The pipelines that score with ``model``."""
        rows = self._q("SELECT pipeline FROM pipeline_models WHERE tenant = ? AND model = ? "
                       "ORDER BY pipeline", (tenant, model))  # fmt: skip
        return [str(r[0]) for r in rows]
