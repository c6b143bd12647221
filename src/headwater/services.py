"""Wiring: build the adapters the settings ask for and hand them to the core.

Embedded mode: ``FileLog`` in the data dir, ``DuckDBStore`` file, SQLite catalog.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import structlog

from headwater.catalog.quotas import Quotas, TenantQuotas
from headwater.catalog.sqlite import Catalog
from headwater.ingest.answers import AnswerFile, answer_topics, copy_answers, read_answers
from headwater.ingest.batch import DecodeLimits
from headwater.ingest.dedup import IdIndex
from headwater.ingest.idempotency import IdempotencyKeys
from headwater.ingest.quarantine import mark_replayed, new_quarantined, update_in_place
from headwater.ingest.replay import QuarantineReplay
from headwater.ingest.service import InflightBudget, IngestService, TokenBucket
from headwater.ingest.streams import (
    QUARANTINE_STORED_SCHEMA,
    QUARANTINE_UPDATES_SCHEMA,
    StreamDirectory,
    StreamState,
    quarantine_table_of,
    store_schema,
)
from headwater.log.file import FileLog
from headwater.log.ports import Log
from headwater.log.retention import RetentionClock, trim_point
from headwater.model.time import Clock, SystemClock, parse_duration_ms
from headwater.observability import metrics as m
from headwater.settings import Settings
from headwater.store.duckdb import DuckDBStore
from headwater.store.materializer import Feed, Materializer
from headwater.store.ports import ResultStore
from headwater.store.tombstones import Tombstones

log = structlog.get_logger("headwater")

DEFAULT_TENANT = "default"


@dataclass
class Platform:
    settings: Settings
    clock: Clock
    catalog: Catalog
    log: Log
    store: ResultStore
    streams: StreamDirectory
    materializer: Materializer
    ingest: IngestService
    replay: QuarantineReplay
    quotas: TenantQuotas
    tombstones: Tombstones
    ingest_limits: DecodeLimits
    bootstrap_secret: str | None = None
    extras: dict[str, object] = field(default_factory=dict)
    retention: RetentionClock = field(default_factory=RetentionClock)
    inflight: InflightBudget = field(default_factory=lambda: InflightBudget(256 * 1024 * 1024))

    def feeds(self) -> Iterator[Feed]:
        for st in self.streams.all():
            quarantine = quarantine_table_of(st.schema.name)
            # Replayed rows mark their quarantine rows in the commit that stores them.
            yield Feed(
                st.tenant, st.topic, st.schema.name, _schema_of(st), mark_replayed(quarantine),
                st.schema.subject,
            )  # fmt: skip
            yield Feed(
                st.tenant,
                st.quarantine_topic,
                quarantine,
                lambda: QUARANTINE_STORED_SCHEMA,
                new_quarantined,
            )
            yield Feed(
                st.tenant,
                st.quarantine_updates_topic,
                quarantine,
                lambda: QUARANTINE_UPDATES_SCHEMA,
                update_in_place(quarantine),
            )

    def table_names(self, tenant: str) -> set[str]:
        names = {s.schema.name for s in self.streams.in_tenant(tenant)}
        for p in self.catalog.pipelines(tenant):
            names |= {p.name, f"{p.name}_late", f"{p.name}_errors"}
        names |= set(self.catalog.reference_tables(tenant))
        names |= {f"{s.name}_dlq" for s in self.catalog.sinks(tenant)}
        return names

    def housekeeping(self) -> None:
        """Copy new idempotency answers to disk, trim the hot log, forget expired answers."""
        now = self.clock.now_ms()
        copied = copy_answers(self.log, self.streams.all(), self.ingest.idempotency)
        retention = parse_duration_ms(self.settings.log_retention)
        readers: dict[str, list[int]] = {}
        for part in ("pipelines", "sinks"):
            consumers = self.extras.get(part)
            if consumers is not None:
                for topic, offset in consumers.consumer_offsets():  # type: ignore[attr-defined]
                    readers.setdefault(topic, []).append(offset)
        for st in self.streams.all():
            for topic in answer_topics(st):
                end = self.log.end_offset(topic)
                self.retention.mark(topic, now, end)
                consumers = [
                    end if topic == st.idempotency_topic else self.materializer.committed(topic)
                ]
                consumers += [copied.get(topic, 0), *readers.get(topic, [])]
                cut = trim_point(self.retention.marks[topic], now, retention, consumers)
                if cut > self.log.start_offset(topic):
                    self.log.trim(topic, cut)
                    self.retention.forget_before(topic, cut)
        self.ingest.idempotency.expire(now)
        self._expire_rows(now)
        self.catalog.forget_audit_before(now - parse_duration_ms(self.settings.audit_retention))

    def _expire_rows(self, now_ms: int) -> None:
        """Delete stored rows (and quarantined ones) received longer ago than their stream's
        ``retention``. Rows still in the hot log stay there until ``log_retention``."""
        for st in self.streams.all():
            if not st.schema.retention:
                continue
            cut = now_ms - parse_duration_ms(st.schema.retention)
            name = st.schema.name
            gone = self.store.delete_before(st.tenant, name, "_received_ms", cut)
            gone += self.store.delete_before(
                st.tenant, quarantine_table_of(name), "received_ms", cut
            )
            if gone:
                m.STORE_ROWS_EXPIRED.labels(st.tenant, name).inc(gone)
                log.info("rows_expired", tenant=st.tenant, stream=name, rows=gone)

    async def close(self) -> None:
        self.materializer.stop()
        await self.log.close()
        self.store.close()
        self.catalog.close()
        if self.ingest.idempotency.disk is not None:
            self.ingest.idempotency.disk.close()


def _schema_of(st: StreamState):  # type: ignore[no-untyped-def]
    return lambda: store_schema(st.schema)


def build_platform(settings: Settings, clock: Clock | None = None) -> Platform:
    clock = clock or SystemClock()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.catalog_path)
    secret = _bootstrap(catalog, settings, clock)
    log_ = FileLog(settings.log_dir, segment_bytes=settings.log_segment_bytes, fsync=settings.fsync)
    store = DuckDBStore(
        settings.store_path,
        memory_limit=settings.duckdb_memory_limit,
        threads=settings.duckdb_threads,
    )
    streams = StreamDirectory(catalog, store)
    idem = IdempotencyKeys(
        parse_duration_ms(settings.idempotency_ttl), AnswerFile(settings.answers_path)
    )
    limits = replace(DecodeLimits.from_settings(settings), pii_key=_pii_key(settings))
    rate = (
        TokenBucket(settings.rate_limit_rows_per_s, settings.rate_limit_burst_rows)
        if settings.rate_limit_rows_per_s > 0
        else None
    )
    quotas = TenantQuotas(catalog, Quotas.from_settings(settings))
    tombstones = Tombstones()
    for tenant, stream, subject, erased_ms in catalog.erasures():
        tombstones.add(tenant, stream, subject, erased_ms)
    platform_ref: list[Platform] = []
    materializer = Materializer(
        log_, store, settings.store_batch_rows, lambda: platform_ref[0].feeds(), tombstones
    )
    ingest = IngestService(
        log_, clock, limits, idem, rate,
        lag_rows=lambda st: materializer.lag(st.topic),  # type: ignore[arg-type]
        max_lag_rows=settings.store_max_lag_rows, tenant_rates=quotas,
    )  # fmt: skip
    replay = QuarantineReplay(log_, store, ingest, clock, limits, materializer.caught_up)
    platform = Platform(
        settings, clock, catalog, log_, store, streams, materializer, ingest, replay, quotas,
        tombstones, limits, secret,
    )  # fmt: skip
    platform.inflight = InflightBudget(settings.max_inflight_bytes)
    platform_ref.append(platform)
    _recover(platform)
    materializer.start()
    return platform


def _pii_key(settings: Settings) -> bytes:
    """The secret of pii 'hash' fields: made once, kept in the data dir (owner-only)."""
    path = settings.data_dir / "pii.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
    key = path.read_bytes()
    if len(key) != 32:
        raise RuntimeError(
            f"{path} is damaged ({len(key)} bytes, not 32): restore it from a backup; "
            "without it, new pii 'hash' values no longer match the stored ones"
        )
    return key


def _bootstrap(catalog: Catalog, settings: Settings, clock: Clock) -> str | None:
    """First start: the default tenant and an admin key. Returns the new secret, if any."""
    catalog.ensure_tenant(DEFAULT_TENANT, clock.now_ms())
    if catalog.has_any_key():
        if settings.bootstrap_key and catalog.key_by_secret(settings.bootstrap_key) is None:
            catalog.create_key(
                DEFAULT_TENANT, "admin", clock.now_ms(), "bootstrap", settings.bootstrap_key
            )
        return None
    secret = settings.bootstrap_key or "hw_" + secrets.token_urlsafe(32)
    catalog.create_key(DEFAULT_TENANT, "admin", clock.now_ms(), "bootstrap", secret)
    return secret


def _recover(p: Platform) -> None:
    """Rebuild in-memory indexes from the store, the answer file and the log tail.

    Only the log's tail is read: rows the store has not committed yet (their event ids)
    and entries whose idempotency answers are not yet in the answer file.
    """
    ttl_ms = parse_duration_ms(p.settings.idempotency_ttl)
    now = p.clock.now_ms()
    keys = p.ingest.idempotency
    on_disk = keys.disk.progress() if keys.disk is not None else {}
    for st in p.streams.all():
        if st.schema.id is not None:
            horizon = (
                parse_duration_ms(st.schema.dedup_horizon) if st.schema.dedup_horizon else None
            )
            since = now - horizon if horizon is not None else None
            stored = p.store.id_hashes(st.tenant, st.schema.name, since)
            st.ids = IdIndex(stored.to_numpy(zero_copy_only=False).astype("uint64"))
            # and the ids of rows the store has not committed yet
            materialized = p.store.consumer_offsets(st.tenant, f"materialize:{st.schema.name}")
            offset = max(p.log.start_offset(st.topic), materialized.get(st.topic, 0))
            while entries := p.log.read(st.topic, offset, 1_000_000):
                for e in entries:
                    st.ids.add(e.batch.column("_id_hash").drop_null().to_numpy())
                offset = entries[-1].end
        for topic in answer_topics(st):  # answers not yet copied to the answer file
            found, _ = read_answers(p.log, st, topic, on_disk.get(topic, 0))
            for _, _, rec in found:
                if now - rec.at_ms <= ttl_ms:
                    keys.remember(st.tenant, st.schema.name, rec)
    log.info("recovered", streams=len(p.streams.all()))


__all__ = ["DEFAULT_TENANT", "Platform", "build_platform"]
