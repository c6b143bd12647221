"""Wiring: build the adapters the settings ask for and hand each component its ports.

Embedded mode: ``FileLog`` in the data dir, ``DuckDBStore`` (a DuckDB file per tenant),
SQLite catalog. Every component is constructed here, once, with only the collaborators
it uses; nothing is looked up later by name.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from headwater.alerts.delivery import RetryPolicy
from headwater.alerts.service import Alerts
from headwater.catalog.quotas import Quotas, TenantQuotas
from headwater.connectors.sources.kinds import pull_kinds
from headwater.connectors.sources.positions import PositionFile
from headwater.connectors.sources.registry import Sources
from headwater.connectors.sources.runtime import SourceRuntime
from headwater.connectors.sources.uploads import Uploads
from headwater.connectors.sources.workers import remote_kinds
from headwater.ingest.accept import Acceptor
from headwater.ingest.admission import Admission, TokenBucket
from headwater.ingest.feeds import stream_feeds
from headwater.ingest.idempotency import IdempotencyKeys
from headwater.ingest.idspill import IdSpiller
from headwater.ingest.inflight import InflightBudget
from headwater.ingest.model import DecodeLimits
from headwater.ingest.replay import QuarantineReplay
from headwater.ingest.service import IngestService
from headwater.ingest.streams import StreamDirectory, StreamState
from headwater.ingest.tables import TableNames
from headwater.model.time import Clock, SystemClock, parse_duration_ms
from headwater.pipelines.manager import PipelineManager, erased_rows
from headwater.pipelines.models import ModelRegistry
from headwater.query.limits import QueryLimits
from headwater.query.pool import QueryPool
from headwater.runtime.core import Runtime
from headwater.runtime.demo import DemoFleet
from headwater.runtime.housekeeping import Housekeeping
from headwater.runtime.opening import (
    bootstrap,
    id_indexes,
    open_answers,
    open_catalog,
    open_log,
    open_store,
    pii_key,
    recover,
)
from headwater.settings import Settings
from headwater.sinks.manager import SinkManager
from headwater.sinks.workers import SinkWorkers
from headwater.store.materializer import Materializer
from headwater.store.tombstones import Tombstones


def build_runtime(settings: Settings, clock: Clock | None = None, demo: bool = False) -> Runtime:
    """Open the data dir and construct every component; ``await runtime.start()`` runs them.

    ``demo`` adds the demo fleet: the ``readings`` stream, sample pipelines, the simulator.
    """
    clock = clock or SystemClock()
    QueryLimits.from_settings(settings)  # a malformed size setting stops the start, not a query
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = open_catalog(settings)
    secret = bootstrap(catalog, settings, clock)
    store = open_store(settings)
    answers = open_answers(settings)
    log_ = open_log(settings, store, answers)
    streams = StreamDirectory(catalog, store, id_indexes(settings))
    tables = TableNames(catalog, streams)
    tombstones = Tombstones()
    for tenant, stream, subject, erased_ms in catalog.erasures():
        tombstones.add(tenant, stream, subject, erased_ms)
    quotas = TenantQuotas(catalog, Quotas.from_settings(settings), store.stored_bytes)

    # the data path: ingest → log → store
    materializer = Materializer(
        log_, store, settings.store_batch_rows, lambda: stream_feeds(streams.all()), tombstones
    )
    limits = replace(DecodeLimits.from_settings(settings), pii_key=pii_key(settings))
    idem = IdempotencyKeys(parse_duration_ms(settings.idempotency_ttl), answers)

    def lag(st: StreamState) -> int:
        return materializer.lag(st.topic)

    rate = (
        TokenBucket(settings.rate_limit_rows_per_s, settings.rate_limit_burst_rows)
        if settings.rate_limit_rows_per_s > 0
        else None
    )
    admission = Admission(lag, settings.store_max_lag_rows, rate, quotas)
    ingest = IngestService(log_, clock, limits, idem, admission)
    acceptor = Acceptor(ingest, log_, clock, limits, lag, settings.store_max_lag_rows, quotas)
    replay = QuarantineReplay(log_, store, ingest, clock, limits, materializer.caught_up)
    recover(streams, idem, log_, store, clock.now_ms(), parse_duration_ms(settings.idempotency_ttl))

    # what runs on the data: pipelines, sinks, sources, alerts
    models = ModelRegistry(catalog, settings.data_dir)
    pipelines = PipelineManager(
        settings, catalog, log_, store, streams, clock, tombstones, quotas, tables, models
    )
    sinks = SinkManager(
        catalog, log_, store, streams, clock, pipelines.followed, tables.readable,
        lambda tenant, stream: partial(erased_rows, tombstones, streams.get(tenant, stream)),
        settings.sink_files_root,
        SinkWorkers(settings.sink_workers) if settings.sink_workers else None,
    )  # fmt: skip
    root = settings.file_sources_root
    sources = Sources(catalog, clock, root)
    positions = PositionFile(settings.data_dir / "sources.sqlite")
    kinds = pull_kinds(root, clock)
    if settings.source_processes:
        kinds = remote_kinds(kinds, root)
    source_runtime = SourceRuntime(sources, streams, acceptor, positions, kinds, log_)
    uploads = Uploads(
        settings.data_dir / "uploads", source_runtime, streams, settings.file_chunk_bytes
    )
    s = settings
    policy = RetryPolicy(s.alert_delivery_attempts, s.alert_retry_base_s, s.alert_retry_cap_s)
    alerts = Alerts(catalog, store, clock, policy, s.alert_history_max_events)

    def readers() -> list[tuple[str, int]]:
        return [*pipelines.consumer_offsets(), *sinks.consumer_offsets()]

    housekeeping = Housekeeping(
        clock, log_, streams, idem, materializer, store, catalog, settings, readers
    )
    fleet = (
        DemoFleet(settings, clock, streams, tables, sources, pipelines, alerts) if demo else None
    )
    return Runtime(
        settings=settings, clock=clock, catalog=catalog, log=log_, store=store,
        streams=streams, tables=tables, tombstones=tombstones, quotas=quotas,
        ingest_limits=limits, ingest=ingest, acceptor=acceptor,
        inflight=InflightBudget(settings.max_inflight_bytes, settings.max_inflight_share),
        materializer=materializer, id_spiller=IdSpiller(log_, streams.all), replay=replay,
        queries=QueryPool(settings.query_threads, settings.query_concurrency_per_tenant),
        models=models, pipelines=pipelines, sinks=sinks, sources=sources,
        source_runtime=source_runtime, positions=positions, uploads=uploads, alerts=alerts,
        housekeeping=housekeeping, demo=fleet, bootstrap_secret=secret,
    )  # fmt: skip
