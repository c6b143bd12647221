"""The pull-source kinds this build runs: kind name → how to open a source of that kind.

Each kind's module (and its client library: paho, librdkafka, psycopg, nats-py) loads
when a source of that kind is first opened, so a server, or a reader's own process,
loads only the clients it uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from headwater.connectors.sources.ports import Kinds, PullSource
from headwater.model.time import Clock

if TYPE_CHECKING:
    from headwater.catalog.sqlite import SourceRecord


def pull_kinds(file_root: Path, clock: Clock) -> Kinds:
    def mqtt(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.mqtt import MqttSource

        return MqttSource(rec)

    def file(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.files import DirectorySource

        return DirectorySource(rec, file_root)

    def simulator(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.simulator import SimulatorSource

        return SimulatorSource(rec, clock.now_ms)

    def poll(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.poll import PollSource

        return PollSource(rec)

    def kafka(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.kafka import KafkaSource

        return KafkaSource(rec)

    def postgres_cdc(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.postgres_cdc import PostgresCdcSource

        return PostgresCdcSource(rec)

    def nats(rec: SourceRecord) -> PullSource:
        from headwater.connectors.sources.nats import NatsSource

        return NatsSource(rec)

    return {"mqtt": mqtt, "file": file, "simulator": simulator, "poll": poll, "kafka": kafka,
            "postgres_cdc": postgres_cdc, "nats": nats}  # fmt: skip
