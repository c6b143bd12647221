"""Wiring: build the adapters the settings ask for and hand them to the core.

Embedded mode: ``FileLog`` in the data dir, ``DuckDBStore`` (a DuckDB file per tenant),
SQLite catalog.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import structlog

from headwater.catalog.quotas import Quotas, TenantQuotas
from headwater.catalog.sqlite import Catalog
from headwater.datadir import committed_offsets, open_part, open_sqlite_part
from headwater.errors import NotFound
from headwater.ingest.answers import AnswerFile, answer_topics, copy_answers, read_answers
from headwater.ingest.batch import DecodeLimits
from headwater.ingest.dedup import IdIndex
from headwater.ingest.idempotency import IdempotencyKeys
from headwater.ingest.idspill import IdSpiller, replay_tail
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
from headwater.log.ports import Log, LogCorrupted
from headwater.log.retention import RetentionClock, trim_point
from headwater.model.names import tables_of
from headwater.model.schema import StreamSchema
from headwater.model.time import Clock, SystemClock, parse_duration_ms
from headwater.observability import metrics as m
from headwater.query.limits import QueryLimits
from headwater.query.pool import QueryPool
from headwater.settings import Settings
from headwater.store.duckdb import DuckDBStore
from headwater.store.duckdb_migrate import migrate_shared_store
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
    queries: QueryPool = field(default_factory=lambda: QueryPool(threads=8, per_tenant=4))
    id_spiller: IdSpiller | None = None

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

    def occupied_tables(self, tenant: str) -> set[str]:
        """Every store table the tenant's streams, pipelines and reference tables occupy."""
        out: set[str] = set()
        for s in self.streams.in_tenant(tenant):
            out |= set(tables_of("stream", s.schema.name))
        for p in self.catalog.pipelines(tenant):
            out |= set(tables_of("pipeline", p.name))
        for name in self.catalog.reference_tables(tenant):
            out |= set(tables_of("reference", name))
        return out

    def table_names(self, tenant: str) -> set[str]:
        names = {s.schema.name for s in self.streams.in_tenant(tenant)}
        for p in self.catalog.pipelines(tenant):
            names |= {p.name, f"{p.name}_late", f"{p.name}_errors"}
        names |= set(self.catalog.reference_tables(tenant))
        names |= {f"{s.name}_dlq" for s in self.catalog.sinks(tenant)}
        names |= {f"{a['name']}_dlq" for a, _ in self.catalog.alerts() if a["tenant"] == tenant}
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
                if topic == st.topic and st.ids.runs is not None:
                    consumers.append(st.ids.runs.covered)  # ids not yet on disk
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
        if self.id_spiller is not None:
            self.id_spiller.stop()
        await self.log.close()
        self.store.close()
        self.catalog.close()
        self.queries.close()
        if self.ingest.idempotency.disk is not None:
            self.ingest.idempotency.disk.close()


def _schema_of(st: StreamState):  # type: ignore[no-untyped-def]
    return lambda: store_schema(st.schema)


def build_platform(settings: Settings, clock: Clock | None = None) -> Platform:
    clock = clock or SystemClock()
    QueryLimits.from_settings(settings)  # a malformed size setting stops the start, not a query
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = open_sqlite_part(
        "catalog", settings.catalog_path, lambda: Catalog(settings.catalog_path)
    )
    secret = _bootstrap(catalog, settings, clock)
    open_part(
        "store",
        settings.legacy_store_path,
        lambda: migrate_shared_store(
            settings.legacy_store_path,
            settings.store_dir,
            memory_limit=settings.duckdb_memory_limit,
        ),
    )
    store = open_part(
        "store",
        settings.store_dir,
        lambda: DuckDBStore(
            settings.store_dir,
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
            tenant_memory_limit=settings.duckdb_tenant_memory_limit,
        ),
    )
    answers = open_sqlite_part(
        "answers", settings.answers_path, lambda: AnswerFile(settings.answers_path)
    )
    # The log refuses to start below an offset any consumer committed (see log.recovery).
    try:
        log_ = FileLog(
            settings.log_dir,
            segment_bytes=settings.log_segment_bytes,
            fsync=settings.fsync,
            committed=committed_offsets(store, answers),
        )
    except LogCorrupted as exc:
        text = exc.message.replace("<dir>", str(settings.data_dir))
        raise LogCorrupted(text, **exc.details) from None
    streams = StreamDirectory(catalog, store, id_indexes(settings))
    idem = IdempotencyKeys(parse_duration_ms(settings.idempotency_ttl), answers)
    limits = replace(DecodeLimits.from_settings(settings), pii_key=_pii_key(settings))
    rate = (
        TokenBucket(settings.rate_limit_rows_per_s, settings.rate_limit_burst_rows)
        if settings.rate_limit_rows_per_s > 0
        else None
    )
    quotas = TenantQuotas(catalog, Quotas.from_settings(settings), store.stored_bytes)
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
        queries=QueryPool(settings.query_threads, settings.query_concurrency_per_tenant),
    )  # fmt: skip
    platform.inflight = InflightBudget(settings.max_inflight_bytes, settings.max_inflight_share)
    platform_ref.append(platform)
    _recover(platform)
    materializer.start()
    platform.id_spiller = IdSpiller(log_, streams.all)
    platform.id_spiller.start()
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


def id_indexes(settings: Settings) -> Callable[[str, StreamSchema], IdIndex]:
    """Each id-bearing stream's event-id index: hot in memory, runs and filter on disk."""

    def make(tenant: str, schema: StreamSchema) -> IdIndex:
        if schema.id is None:
            return IdIndex()
        directory = settings.data_dir / "ids" / f"{tenant}.{schema.name}"
        opening = functools.partial(
            IdIndex.on_disk,
            directory,
            settings.id_filter_bytes,
            spill_ids=settings.id_spill_ids,
            hot_max_ids=settings.id_hot_max_ids,
        )
        try:
            return opening()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # The index is derived data: set it aside and rebuild it from the store and
            # the log (``_recover_ids``), which hold every id it held.
            aside = directory.with_name(f"{directory.name}.damaged-{int(time.time())}")
            directory.rename(aside)
            log.warning("id_index_damaged", directory=str(directory), moved_to=str(aside),
                        error=repr(exc))  # fmt: skip
            return opening()

    return make


def _recover(p: Platform) -> None:
    """Rebuild in-memory indexes from the answer file and the log tail.

    Only the log's tail is read: entries whose event ids are not yet in the stream's
    on-disk id runs, and entries whose idempotency answers are not yet in the answer file.
    """
    ttl_ms = parse_duration_ms(p.settings.idempotency_ttl)
    now = p.clock.now_ms()
    keys = p.ingest.idempotency
    on_disk = keys.disk.progress() if keys.disk is not None else {}
    for st in p.streams.all():
        if st.schema.id is not None:
            _recover_ids(p, st)
        for topic in answer_topics(st):  # answers not yet copied to the answer file
            found, _ = read_answers(p.log, st, topic, on_disk.get(topic, 0))
            for _, _, rec in found:
                if now - rec.at_ms <= ttl_ms:
                    keys.remember(st.tenant, st.schema.name, rec)
    log.info("recovered", streams=len(p.streams.all()))


def _recover_ids(p: Platform, st: StreamState) -> None:
    ids, runs = st.ids, st.ids.runs
    if runs is None:
        return
    if not runs.exists:  # the first start with on-disk ids: take the store's, once
        try:
            stored = p.store.id_hashes(st.tenant, st.schema.name, None)
        except NotFound:  # the store was lost: it is rebuilt from the log, ids with it
            stored = pa.array([], pa.uint64())
        stored_np = np.unique(stored.to_numpy(zero_copy_only=False).astype(np.uint64))
        materialized = p.store.consumer_offsets(st.tenant, f"materialize:{st.schema.name}")
        runs.add(stored_np, covered=materialized.get(st.topic, 0))
        if ids.filter is not None:
            ids.filter.add(stored_np)
        log.info("id_index_built", stream=st.schema.name, ids=int(stored_np.size))
    replay_tail(ids, st.topic, p.log)


__all__ = ["DEFAULT_TENANT", "Platform", "build_platform"]
