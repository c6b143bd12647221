"""The pull-source kinds this build runs: kind name → how to open a source of that kind."""

from __future__ import annotations

from pathlib import Path

from headwater.connectors.sources.files import DirectorySource
from headwater.connectors.sources.kafka import KafkaSource
from headwater.connectors.sources.mqtt import MqttSource
from headwater.connectors.sources.nats import NatsSource
from headwater.connectors.sources.poll import PollSource
from headwater.connectors.sources.postgres_cdc import PostgresCdcSource
from headwater.connectors.sources.runtime import Kinds
from headwater.connectors.sources.simulator import SimulatorSource
from headwater.model.time import Clock


def pull_kinds(file_root: Path, clock: Clock) -> Kinds:
    return {
        "mqtt": MqttSource,
        "file": lambda rec: DirectorySource(rec, file_root),
        "simulator": lambda rec: SimulatorSource(rec, clock.now_ms),
        "poll": PollSource,
        "kafka": KafkaSource,
        "postgres_cdc": PostgresCdcSource,
        "nats": NatsSource,
    }
