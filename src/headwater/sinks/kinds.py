"""Which runner a sink's kind gets, and where its outbox lives."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from headwater.log.ports import Log, LogEntry
from headwater.sinks.outbox import LocalOutbox, Outboxes
from headwater.sinks.parquet import ParquetConfig, ParquetFiles, ParquetRunner
from headwater.sinks.ports import Options
from headwater.sinks.runner import SinkRunner
from headwater.store.ports import ResultStore


def runner_of(
    tenant: str, name: str, config: Options, topic: str, by_offset: bool, log_: Log,
    store: ResultStore, erased: Callable[[list[LogEntry]], pa.Array | None], outboxes: Outboxes,
) -> SinkRunner:  # fmt: skip
    if isinstance(config, ParquetConfig):  # whole files, written here: no requests to cut
        files = LocalOutbox(name, by_offset, ParquetFiles(config))
        return ParquetRunner(tenant, name, topic, by_offset, log_, store, files, erased)
    outbox = outboxes.open(name, by_offset, config)
    return SinkRunner(tenant, name, topic, by_offset, log_, store, outbox, erased)
