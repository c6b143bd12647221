"""The runtime: one typed object owning every component, started and stopped in order.

``build_runtime`` (``runtime.build``) constructs it; ``start()`` runs the components in
dependency order (the store's copier first, the demo fleet last) and ``stop()`` stops
them in reverse, then closes the files. Both are idempotent. The HTTP API mounts routes
over these components and starts nothing itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import structlog

from headwater.alerts.service import Alerts
from headwater.catalog.quotas import TenantQuotas
from headwater.catalog.sqlite import Catalog
from headwater.connectors.sources.positions import PositionFile
from headwater.connectors.sources.registry import Sources
from headwater.connectors.sources.runtime import SourceRuntime
from headwater.connectors.sources.uploads import Uploads
from headwater.ingest.accept import Acceptor
from headwater.ingest.idspill import IdSpiller
from headwater.ingest.inflight import InflightBudget
from headwater.ingest.model import DecodeLimits
from headwater.ingest.replay import QuarantineReplay
from headwater.ingest.service import IngestService
from headwater.ingest.streams import StreamDirectory
from headwater.ingest.tables import TableNames
from headwater.log.ports import Log
from headwater.model.time import Clock
from headwater.pipelines.manager import PipelineManager
from headwater.pipelines.models import ModelRegistry
from headwater.query.pool import QueryPool
from headwater.runtime.demo import DemoFleet
from headwater.runtime.housekeeping import Housekeeping
from headwater.settings import Settings
from headwater.sinks.manager import SinkManager
from headwater.store.materializer import Materializer
from headwater.store.ports import ResultStore
from headwater.store.tombstones import Tombstones

log = structlog.get_logger("headwater")


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    # ports and the data path
    catalog: Catalog
    log: Log
    store: ResultStore
    streams: StreamDirectory
    tables: TableNames
    tombstones: Tombstones
    quotas: TenantQuotas
    ingest_limits: DecodeLimits
    ingest: IngestService
    acceptor: Acceptor
    inflight: InflightBudget
    materializer: Materializer
    id_spiller: IdSpiller
    replay: QuarantineReplay
    queries: QueryPool
    # what runs on the data
    models: ModelRegistry
    pipelines: PipelineManager
    sinks: SinkManager
    sources: Sources
    source_runtime: SourceRuntime
    positions: PositionFile
    uploads: Uploads
    alerts: Alerts
    housekeeping: Housekeeping
    demo: DemoFleet | None = None
    bootstrap_secret: str | None = None  # the admin key made on the first start
    _running: bool = field(default=False, repr=False)
    _closed: bool = field(default=False, repr=False)
    _alerting: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    async def start(self) -> None:
        """Start every component, in dependency order; a second call does nothing."""
        if self._running or self._closed:
            return
        self._running = True
        self.materializer.start()
        self.id_spiller.start()
        await asyncio.to_thread(self.pipelines.start_all)
        await asyncio.to_thread(self.sinks.start_all)
        await self.source_runtime.start()
        await self.uploads.resume()
        self._alerting.clear()
        interval = self.settings.alert_eval_interval_s
        self._tasks.append(
            asyncio.create_task(self.alerts.run(interval, self._alerting), name="alerts")
        )
        await self.housekeeping.start()
        if self.demo is not None:
            await self.demo.start()
        log.info("runtime_started", demo=self.demo is not None)

    async def stop(self) -> None:
        """Stop what ``start`` started, in reverse, then close the data dir's files.

        Safe to call more than once, and without a ``start`` (it then only closes)."""
        if self._running:
            self._running = False
            if self.demo is not None:
                await self.demo.stop()
            await self.housekeeping.stop()
            self._alerting.set()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks.clear()
            await self.uploads.stop()
            await self.source_runtime.stop()
            await asyncio.to_thread(self.sinks.stop_all)
            await asyncio.to_thread(self.pipelines.stop_all)
        await self._close()

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self.sinks.stop_all)  # its event loop, even if never started
        self.positions.close()
        self.materializer.stop()
        self.id_spiller.stop()
        await self.log.close()
        self.store.close()
        self.catalog.close()
        self.queries.close()
        if self.ingest.idempotency.disk is not None:
            self.ingest.idempotency.disk.close()
