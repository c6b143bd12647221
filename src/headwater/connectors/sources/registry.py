"""The sources of every tenant: their definitions (in the catalog), status and counters.

``POST /v1/sources`` takes ``{"name", "kind", "stream", "config"}``. Every kind of the API
is named here; a kind this build cannot run yet is refused with a 400 naming the ones it
can, never accepted and left idle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headwater.catalog.sqlite import Catalog, SourceRecord
from headwater.connectors.sources.webhook import WebhookConfig
from headwater.errors import BadRequest, Conflict, NotFound
from headwater.model.schema import NAME_RE
from headwater.model.time import Clock, ms_to_datetime

KINDS = ("webhook", "mqtt", "poll", "postgres_cdc", "file", "kafka", "nats", "simulator")
RUNNABLE = ("webhook", "mqtt", "file", "poll", "kafka", "postgres_cdc", "nats", "simulator")
PULL = ("mqtt", "file", "poll", "kafka", "postgres_cdc", "nats", "simulator")
SECRET_KEYS = ("secret", "secrets", "password", "headers", "token")


@dataclass
class SourceStats:
    rows_in: int = 0
    rows_rejected: int = 0
    deliveries: int = 0
    refused: int = 0  # deliveries with a bad or missing signature
    last_error: str | None = None
    position: str | None = None  # the last delivery id, or the last committed position
    last_ms: int | None = None
    # pull sources (set by the runtime): running, backing_off or failed, and why
    state: str | None = None
    reason: str | None = None
    duplicates: int = 0
    lag: int | None = None
    positions: dict[str, str] = field(default_factory=dict)  # per partition


def parse_config(kind: str, config: dict[str, Any], file_root: Path | None = None) -> None:
    """Refuse a config its kind cannot run, with a 400 saying what to fix."""
    if kind == "webhook":
        WebhookConfig.parse(config)
    elif kind == "mqtt":
        from headwater.connectors.sources.mqtt import MqttConfig

        MqttConfig.parse(config)
    elif kind == "file":
        from headwater.connectors.sources.files import DirectoryConfig

        DirectoryConfig.parse(config, file_root)
    elif kind == "poll":
        from headwater.connectors.sources.poll import PollConfig

        PollConfig.parse(config)
    elif kind == "kafka":
        from headwater.connectors.sources.kafka import KafkaConfig, check_client

        check_client(KafkaConfig.parse(config))
    elif kind == "postgres_cdc":
        from headwater.connectors.sources.postgres_cdc import CdcConfig

        CdcConfig.parse(config)
    elif kind == "simulator":
        from headwater.connectors.sources.simulator import SimulatorConfig

        SimulatorConfig.parse(config)
    elif kind == "nats":
        from headwater.connectors.sources.nats import NatsConfig

        NatsConfig.parse(config)


class Sources:
    def __init__(self, catalog: Catalog, clock: Clock, file_root: Path | None = None) -> None:
        self._catalog = catalog
        self._file_root = file_root
        self._clock = clock
        self._lock = threading.Lock()
        self._records = {(r.tenant, r.name): r for r in catalog.sources()}
        self._stats: dict[tuple[str, str], SourceStats] = {}
        # called on create, pause/resume (the new record) and drop (dropped=True)
        self.listeners: list[Callable[..., None]] = []

    def all(self) -> list[SourceRecord]:
        return list(self._records.values())

    def _tell(self, rec: SourceRecord, dropped: bool = False) -> None:
        for listener in self.listeners:
            listener(rec, dropped=dropped)

    def create(self, tenant: str, data: Any, streams: set[str]) -> SourceRecord:
        if not isinstance(data, dict):
            raise BadRequest('send {"name", "kind", "stream", "config"}', code="bad_source")
        name, kind, stream = data.get("name"), data.get("kind"), data.get("stream")
        config = data.get("config", {})
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise BadRequest(
                "source name: letters, digits and '_', starting with a letter", code="bad_name"
            )
        if kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}", code="bad_source_kind")
        if kind not in RUNNABLE:
            raise BadRequest(
                f"sources of kind {kind!r} are not available in this version yet; "
                f"available: {', '.join(RUNNABLE)}",
                code="source_kind_unavailable",
            )
        if not isinstance(stream, str) or stream not in streams:
            raise BadRequest(
                f"source writes to stream {stream!r}, which does not exist; create it first",
                code="unknown_stream",
            )
        if not isinstance(config, dict):
            raise BadRequest("config must be a JSON object", code="bad_source_config")
        parse_config(kind, config, self._file_root)
        rec = SourceRecord(tenant, name, kind, stream, config, "running", self._clock.now_ms())
        with self._lock:
            # Webhook URLs carry the name alone, so it is unique across tenants.
            if any(r.name == name and (r.tenant == tenant or r.kind == "webhook")
                   for r in self._records.values()):  # fmt: skip
                raise Conflict(
                    f"the source name {name!r} is taken; pick another", code="name_taken"
                )
            self._catalog.put_source(rec)
            self._records[(tenant, name)] = rec
        self._tell(rec)
        return rec

    def get(self, tenant: str, name: str) -> SourceRecord:
        rec = self._records.get((tenant, name))
        if rec is None:
            raise NotFound(f"source {name!r} does not exist", code="unknown_source")
        return rec

    def in_tenant(self, tenant: str) -> list[SourceRecord]:
        return [r for (t, _), r in sorted(self._records.items()) if t == tenant]

    def webhook(self, name: str) -> tuple[SourceRecord, WebhookConfig]:
        """The webhook source of that name in any tenant (its URL names no tenant)."""
        for rec in self._records.values():
            if rec.name == name and rec.kind == "webhook":
                return rec, WebhookConfig.parse(rec.config)
        raise NotFound(f"no webhook source named {name!r}", code="unknown_source")

    def set_status(self, tenant: str, name: str, status: str) -> SourceRecord:
        rec = self.get(tenant, name)
        self._catalog.set_source_status(tenant, name, status)
        new = SourceRecord(rec.tenant, rec.name, rec.kind, rec.stream, rec.config, status,
                           rec.created_ms)  # fmt: skip
        with self._lock:
            self._records[(tenant, name)] = new
        self._tell(new)
        return new

    def drop(self, tenant: str, name: str) -> None:
        rec = self.get(tenant, name)
        self._catalog.drop_source(tenant, name)
        with self._lock:
            self._records.pop((tenant, name), None)
            self._stats.pop((tenant, name), None)
        self._tell(rec, dropped=True)

    def stats(self, rec: SourceRecord) -> SourceStats:
        with self._lock:
            return self._stats.setdefault((rec.tenant, rec.name), SourceStats())

    def view(self, rec: SourceRecord) -> dict[str, Any]:
        s = self.stats(rec)
        config = {k: ("***" if k in SECRET_KEYS else v) for k, v in rec.config.items()}
        status = rec.status
        if status == "running" and s.state is not None:
            status = s.state
        return {
            "name": rec.name, "kind": rec.kind, "stream": rec.stream, "config": config,
            "status": status, "reason": s.reason if status != "paused" else None,
            "created_at": ms_to_datetime(rec.created_ms),
            "positions": {k: v for k, v in s.positions.items() if v != "done"},
            "partitions_done": sum(v == "done" for v in s.positions.values()),
            "duplicates": s.duplicates, "lag": s.lag,
            "position": s.position, "rows_in": s.rows_in, "rows_rejected": s.rows_rejected,
            "deliveries": s.deliveries, "refused": s.refused, "last_error": s.last_error,
            "last_delivery_at": ms_to_datetime(s.last_ms) if s.last_ms else None,
        }  # fmt: skip
