"""Which runner and delivery a sink's kind gets, and which breaker it shares."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pyarrow as pa

from headwater.log.ports import Log, LogEntry
from headwater.sinks.config import HttpConfig, KafkaSinkConfig
from headwater.sinks.http import HttpDelivery
from headwater.sinks.nats import NatsDelivery, NatsSinkConfig
from headwater.sinks.parquet import ParquetConfig, ParquetFiles, ParquetRunner
from headwater.sinks.policy import Breaker
from headwater.sinks.ports import Delivery, Options
from headwater.sinks.runner import SinkRunner
from headwater.store.ports import ResultStore


def destination(config: Options) -> str:
    """What one circuit breaker guards: ``scheme://host:port``, a Kafka cluster, or a
    file directory."""
    if isinstance(config, HttpConfig | NatsSinkConfig):
        return "{0.scheme}://{0.netloc}".format(urlsplit(config.url))
    if isinstance(config, KafkaSinkConfig):
        return f"kafka://{config.bootstrap}"
    return f"file://{getattr(config, 'path', '')}"


def breaker_of(config: Options) -> Breaker:
    if isinstance(config, HttpConfig | NatsSinkConfig | KafkaSinkConfig):
        return Breaker(config.breaker_failures, config.breaker_open_s)
    return Breaker()


def runner_of(
    tenant: str, name: str, config: Options, breaker: Breaker, topic: str, by_offset: bool,
    log_: Log, store: ResultStore, erased: Callable[[list[LogEntry]], pa.Array | None],
) -> SinkRunner:  # fmt: skip
    if isinstance(config, ParquetConfig):
        return ParquetRunner(tenant, name, topic, by_offset, log_, store,
                             ParquetFiles(config), erased)  # fmt: skip
    delivery: Delivery
    if isinstance(config, NatsSinkConfig):
        delivery = NatsDelivery(config, breaker)
    elif isinstance(config, KafkaSinkConfig):
        from headwater.sinks.kafka import KafkaDelivery

        delivery = KafkaDelivery(config, breaker)
    else:
        assert isinstance(config, HttpConfig)
        delivery = HttpDelivery(config, breaker)
    return SinkRunner(tenant, name, topic, by_offset, log_, store, delivery, erased)
