"""SQLite-backed catalog. Every method is one short transaction."""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec

from headwater.catalog.records import AlertsAndModels
from headwater.errors import Conflict, NotFound
from headwater.model.schema import StreamSchema

Role = Literal["admin", "writer", "reader"]
ROLES: tuple[Role, ...] = ("admin", "writer", "reader")

_DDL = """
CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, digest TEXT NOT NULL UNIQUE, role TEXT NOT NULL,
    name TEXT, created_ms INTEGER NOT NULL, revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS stream_versions (
    tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, schema TEXT NOT NULL,
    created_ms INTEGER NOT NULL, PRIMARY KEY (tenant, name, version)
);
CREATE TABLE IF NOT EXISTS pipelines (
    tenant TEXT NOT NULL, name TEXT NOT NULL, sql TEXT NOT NULL, status TEXT NOT NULL,
    reason TEXT, created_ms INTEGER NOT NULL, PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS audit_log (
    at_ms INTEGER NOT NULL, tenant TEXT NOT NULL, key_id TEXT NOT NULL, role TEXT NOT NULL,
    action TEXT NOT NULL, target TEXT NOT NULL, status INTEGER NOT NULL, client TEXT,
    request_id TEXT
);
CREATE INDEX IF NOT EXISTS audit_log_by_tenant ON audit_log (tenant, at_ms);
CREATE TABLE IF NOT EXISTS erasures (
    tenant TEXT NOT NULL, stream TEXT NOT NULL, subject TEXT NOT NULL, erased_ms INTEGER NOT NULL,
    report TEXT, PRIMARY KEY (tenant, stream, subject)
);
CREATE TABLE IF NOT EXISTS sources (
    tenant TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, stream TEXT NOT NULL,
    config TEXT NOT NULL, status TEXT NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS tenant_quotas (tenant TEXT PRIMARY KEY, spec TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sinks (
    tenant TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    config TEXT NOT NULL, status TEXT NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS reference_tables (
    tenant TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL, created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS alert_rules (
    tenant TEXT NOT NULL, name TEXT NOT NULL, spec TEXT NOT NULL, cursor INTEGER,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS alert_states (
    tenant TEXT NOT NULL, rule TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    PRIMARY KEY (tenant, rule, key)
);
CREATE TABLE IF NOT EXISTS alert_events (
    tenant TEXT NOT NULL, rule TEXT NOT NULL, at_ms INTEGER NOT NULL, event TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_events_by_rule ON alert_events (tenant, rule, at_ms);
CREATE TABLE IF NOT EXISTS alert_outbox (
    tenant TEXT NOT NULL, rule TEXT NOT NULL, id TEXT NOT NULL, item TEXT NOT NULL,
    PRIMARY KEY (tenant, rule, id)
);
CREATE TABLE IF NOT EXISTS alert_mutes (
    tenant TEXT NOT NULL, id TEXT NOT NULL, spec TEXT NOT NULL, PRIMARY KEY (tenant, id)
);
CREATE TABLE IF NOT EXISTS models (
    tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, spec TEXT NOT NULL,
    created_ms INTEGER NOT NULL, PRIMARY KEY (tenant, name, version)
);
CREATE TABLE IF NOT EXISTS pipeline_models (
    tenant TEXT NOT NULL, pipeline TEXT NOT NULL, model TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (tenant, pipeline, model)
);
"""


def key_digest(key: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 digest is enough (no stretching).
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    tenant: str
    role: Role
    name: str | None
    created_ms: int
    revoked_ms: int | None


@dataclass(frozen=True, slots=True)
class PipelineRecord:
    tenant: str
    name: str
    sql: str
    status: str
    reason: str | None
    created_ms: int


@dataclass(frozen=True, slots=True)
class SourceRecord:
    tenant: str
    name: str
    kind: str
    stream: str
    config: dict[str, Any]
    status: str  # running | paused
    created_ms: int


@dataclass(frozen=True, slots=True)
class SinkRecord:
    tenant: str
    name: str
    kind: str
    source: str  # the table or stream it follows
    config: dict[str, Any]
    status: str  # running | paused
    created_ms: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative action: who (tenant, key, role), what, when, from where."""

    at_ms: int
    tenant: str
    key_id: str
    role: str
    action: str  # "DELETE /v1/pipelines/{name}"
    target: str  # the path as called: "/v1/pipelines/device_minute"
    status: int
    client: str | None
    request_id: str | None


class Catalog(AlertsAndModels):
    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_DDL)
        self._lock = threading.Lock()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # tenants and keys -------------------------------------------------------------
    def ensure_tenant(self, name: str, now_ms: int) -> bool:
        """Create the tenant if missing; True when it was created."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO tenants (name, created_ms) VALUES (?, ?)", (name, now_ms)
            )
            return cur.rowcount == 1

    def tenants(self) -> list[str]:
        return [r[0] for r in self._q("SELECT name FROM tenants ORDER BY name")]

    def create_key(
        self,
        tenant: str,
        role: Role,
        now_ms: int,
        name: str | None = None,
        secret: str | None = None,
    ) -> tuple[str, ApiKey]:
        """Create a key; return the secret (shown once) and its record."""
        if not self._q("SELECT 1 FROM tenants WHERE name = ?", (tenant,)):
            raise NotFound(f"tenant {tenant!r} does not exist", code="unknown_tenant")
        secret = secret or "hw_" + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(6)
        try:
            self._q(
                "INSERT INTO api_keys (id, tenant, digest, role, name, created_ms) VALUES (?,?,?,?,?,?)",
                (key_id, tenant, key_digest(secret), role, name, now_ms),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict("that key already exists", code="key_exists") from exc
        return secret, ApiKey(key_id, tenant, role, name, now_ms, None)

    def key_by_secret(self, secret: str) -> ApiKey | None:
        rows = self._q(
            "SELECT id, tenant, role, name, created_ms, revoked_ms FROM api_keys WHERE digest = ?",
            (key_digest(secret),),
        )
        return ApiKey(*rows[0]) if rows else None

    def keys(self, tenant: str) -> list[ApiKey]:
        rows = self._q(
            "SELECT id, tenant, role, name, created_ms, revoked_ms FROM api_keys WHERE tenant = ? ORDER BY created_ms",
            (tenant,),
        )
        return [ApiKey(*r) for r in rows]

    def revoke_key(self, tenant: str, key_id: str, now_ms: int) -> None:
        with self._lock:
            cur = self._db.execute(
                "UPDATE api_keys SET revoked_ms = ? WHERE tenant = ? AND id = ? AND revoked_ms IS NULL",
                (now_ms, tenant, key_id),
            )
        if cur.rowcount == 0:
            raise NotFound(f"no active key {key_id!r} in this tenant", code="unknown_key")

    def has_any_key(self) -> bool:
        return bool(self._q("SELECT 1 FROM api_keys LIMIT 1"))

    # streams ----------------------------------------------------------------------
    def add_stream_version(self, tenant: str, schema: StreamSchema, now_ms: int) -> None:
        self._q(
            "INSERT INTO stream_versions (tenant, name, version, schema, created_ms) VALUES (?,?,?,?,?)",
            (tenant, schema.name, schema.version, msgspec.json.encode(schema).decode(), now_ms),
        )

    def stream_versions(self, tenant: str, name: str) -> list[StreamSchema]:
        rows = self._q(
            "SELECT schema FROM stream_versions WHERE tenant = ? AND name = ? ORDER BY version",
            (tenant, name),
        )
        return [msgspec.json.decode(r[0], type=StreamSchema) for r in rows]

    def all_streams(self) -> list[tuple[str, StreamSchema]]:
        """The latest version of every stream of every tenant."""
        rows = self._q(
            "SELECT tenant, schema FROM stream_versions s WHERE version = "
            "(SELECT max(version) FROM stream_versions WHERE tenant = s.tenant AND name = s.name) "
            "ORDER BY tenant, name"
        )
        return [(r[0], msgspec.json.decode(r[1], type=StreamSchema)) for r in rows]

    def drop_stream(self, tenant: str, name: str) -> None:
        self._q("DELETE FROM stream_versions WHERE tenant = ? AND name = ?", (tenant, name))

    # pipelines --------------------------------------------------------------------
    def put_pipeline(self, rec: PipelineRecord) -> None:
        self._q(
            "INSERT INTO pipelines (tenant, name, sql, status, reason, created_ms) VALUES (?,?,?,?,?,?) "
            "ON CONFLICT (tenant, name) DO UPDATE SET sql = excluded.sql, status = excluded.status, "
            "reason = excluded.reason",
            (rec.tenant, rec.name, rec.sql, rec.status, rec.reason, rec.created_ms),
        )

    def set_pipeline_status(self, tenant: str, name: str, status: str, reason: str | None) -> None:
        self._q(
            "UPDATE pipelines SET status = ?, reason = ? WHERE tenant = ? AND name = ?",
            (status, reason, tenant, name),
        )

    def pipelines(self, tenant: str | None = None) -> list[PipelineRecord]:
        if tenant is None:
            rows = self._q(
                "SELECT tenant, name, sql, status, reason, created_ms FROM pipelines ORDER BY tenant, name"
            )
        else:
            rows = self._q(
                "SELECT tenant, name, sql, status, reason, created_ms FROM pipelines WHERE tenant = ? ORDER BY name",
                (tenant,),
            )
        return [PipelineRecord(*r) for r in rows]

    def drop_pipeline(self, tenant: str, name: str) -> None:
        self._q("DELETE FROM pipelines WHERE tenant = ? AND name = ?", (tenant, name))

    # sinks ------------------------------------------------------------------------
    def put_sink(self, rec: SinkRecord) -> None:
        self._q(
            "INSERT INTO sinks (tenant, name, kind, source, config, status, created_ms) "
            "VALUES (?,?,?,?,?,?,?)",
            (rec.tenant, rec.name, rec.kind, rec.source, msgspec.json.encode(rec.config).decode(),
             rec.status, rec.created_ms),
        )  # fmt: skip

    def set_sink_status(self, tenant: str, name: str, status: str) -> None:
        self._q("UPDATE sinks SET status = ? WHERE tenant = ? AND name = ?", (status, tenant, name))

    def sinks(self, tenant: str | None = None) -> list[SinkRecord]:
        cols = "tenant, name, kind, source, config, status, created_ms"
        if tenant is None:
            rows = self._q(f"SELECT {cols} FROM sinks ORDER BY tenant, name")
        else:
            rows = self._q(f"SELECT {cols} FROM sinks WHERE tenant = ? ORDER BY name", (tenant,))
        return [
            SinkRecord(t, n, k, s, msgspec.json.decode(c), st, ms) for t, n, k, s, c, st, ms in rows
        ]

    def drop_sink(self, tenant: str, name: str) -> None:
        self._q("DELETE FROM sinks WHERE tenant = ? AND name = ?", (tenant, name))

    # reference tables -------------------------------------------------------------
    def put_reference_table(
        self, tenant: str, name: str, spec: dict[str, Any], now_ms: int
    ) -> None:
        self._q(
            "INSERT INTO reference_tables (tenant, name, spec, created_ms) VALUES (?,?,?,?) "
            "ON CONFLICT (tenant, name) DO UPDATE SET spec = excluded.spec",
            (tenant, name, msgspec.json.encode(spec).decode(), now_ms),
        )

    def reference_tables(self, tenant: str) -> dict[str, dict[str, Any]]:
        rows = self._q("SELECT name, spec FROM reference_tables WHERE tenant = ?", (tenant,))
        return {r[0]: msgspec.json.decode(r[1]) for r in rows}

    # audit trail --------------------------------------------------------------------
    def audit(self, entry: AuditEntry) -> None:
        self._q(
            "INSERT INTO audit_log (at_ms, tenant, key_id, role, action, target, status, client, "
            "request_id) VALUES (?,?,?,?,?,?,?,?,?)",
            (entry.at_ms, entry.tenant, entry.key_id, entry.role, entry.action, entry.target,
             entry.status, entry.client, entry.request_id),
        )  # fmt: skip

    def audit_entries(
        self, tenant: str | None, since_ms: int, until_ms: int, limit: int
    ) -> list[AuditEntry]:
        """Newest first; every tenant's when ``tenant`` is None."""
        where = "at_ms >= ? AND at_ms < ?"
        args: list[int | str] = [since_ms, until_ms]
        if tenant is not None:
            where += " AND tenant = ?"
            args.append(tenant)
        rows = self._q(
            "SELECT at_ms, tenant, key_id, role, action, target, status, client, request_id "
            f"FROM audit_log WHERE {where} ORDER BY at_ms DESC, rowid DESC LIMIT ?",
            (*args, limit),
        )
        return [AuditEntry(*r) for r in rows]

    def forget_audit_before(self, cut_ms: int) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM audit_log WHERE at_ms < ?", (cut_ms,)).rowcount

    # sources --------------------------------------------------------------------------
    def put_source(self, rec: SourceRecord) -> None:
        self._q(
            "INSERT INTO sources (tenant, name, kind, stream, config, status, created_ms) "
            "VALUES (?,?,?,?,?,?,?)",
            (rec.tenant, rec.name, rec.kind, rec.stream, msgspec.json.encode(rec.config).decode(),
             rec.status, rec.created_ms),
        )  # fmt: skip

    def set_source_status(self, tenant: str, name: str, status: str) -> None:
        self._q(
            "UPDATE sources SET status = ? WHERE tenant = ? AND name = ?", (status, tenant, name)
        )

    def drop_source(self, tenant: str, name: str) -> None:
        self._q("DELETE FROM sources WHERE tenant = ? AND name = ?", (tenant, name))

    def sources(self) -> list[SourceRecord]:
        rows = self._q(
            "SELECT tenant, name, kind, stream, config, status, created_ms FROM sources "
            "ORDER BY tenant, name"
        )
        return [
            SourceRecord(t, n, k, s, msgspec.json.decode(c), st, ms)
            for t, n, k, s, c, st, ms in rows
        ]

    # erased data subjects ------------------------------------------------------------
    def add_erasure(self, tenant: str, stream: str, subject: str, erased_ms: int) -> None:
        """The tombstone, first: from here on no reader brings the subject's rows back."""
        self._q(
            "INSERT INTO erasures (tenant, stream, subject, erased_ms) VALUES (?,?,?,?) "
            "ON CONFLICT (tenant, stream, subject) DO UPDATE SET erased_ms = excluded.erased_ms",
            (tenant, stream, subject, erased_ms),
        )

    def erasure_done(self, tenant: str, stream: str, subject: str, report: dict[str, Any]) -> None:
        self._q(
            "UPDATE erasures SET report = ? WHERE tenant = ? AND stream = ? AND subject = ?",
            (msgspec.json.encode(report).decode(), tenant, stream, subject),
        )

    def erasures(self) -> list[tuple[str, str, str, int]]:
        """Every tombstone: (tenant, stream, subject, erased_ms)."""
        rows = self._q("SELECT tenant, stream, subject, erased_ms FROM erasures")
        return [(str(t), str(s), str(v), int(ms)) for t, s, v, ms in rows]

    def tenant_quotas(self, tenant: str) -> dict[str, Any]:
        """The tenant's own quotas (those it does not set take the defaults)."""
        rows = self._q("SELECT spec FROM tenant_quotas WHERE tenant = ?", (tenant,))
        out: dict[str, Any] = msgspec.json.decode(rows[0][0]) if rows else {}
        return out

    def put_tenant_quotas(self, tenant: str, quotas: dict[str, Any]) -> None:
        self._q(
            "INSERT INTO tenant_quotas (tenant, spec) VALUES (?, ?) "
            "ON CONFLICT (tenant) DO UPDATE SET spec = excluded.spec",
            (tenant, msgspec.json.encode(quotas).decode()),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()
