"""The demo's content: a ``readings`` stream, sample pipelines and the simulated fleet.

``headwater demo`` builds the runtime with a ``DemoFleet``: the stream is created when
missing, the pipelines when the runtime starts, and the simulator runs from start to
stop (the classic demo endpoints pause and resume it).
"""

from __future__ import annotations

import asyncio

from headwater.connectors.sources.simulator import CATEGORIES, Simulator, SimulatorConfig
from headwater.ingest.accept import Acceptor
from headwater.ingest.streams import StreamDirectory, StreamState
from headwater.ingest.tables import TableNames
from headwater.model.schema import schema_from_dict
from headwater.model.time import Clock
from headwater.pipelines.manager import PipelineManager
from headwater.runtime.opening import DEFAULT_TENANT
from headwater.settings import Settings

STREAM = {
    "name": "readings",
    "description": "Simulated IoT sensor readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "category", "type": "string", "required": True, "enum": list(CATEGORIES)},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "value", "type": "float"},
        {"name": "temperature", "type": "float", "min": -50, "max": 150},
        {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
        {"name": "event_id", "type": "string"},
    ],
    "event_time": "ts",
    "key": ["device_id"],
    "id": "event_id",
}

PIPELINES = {
    "device_minute": """CREATE PIPELINE device_minute AS
SELECT device_id, window_start, window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp,
       approx_quantile(temperature, 0.99) AS p99_temp, avg(value) AS avg_value
FROM TUMBLE(readings, ts, INTERVAL '1 minute')
WHERE status <> 'error'
GROUP BY device_id, window_start, window_end
WITH (watermark_delay = '5 seconds', allowed_lateness = '1 minute', emit = 'changes')""",
    "category_stats": """CREATE PIPELINE category_stats AS
SELECT category, avg(value) AS avg_value, count(*) AS count, max(ts) AS last_timestamp
FROM readings
GROUP BY category
WITH (emit = 'changes')""",
    "anomalies": """CREATE PIPELINE anomalies AS
SELECT device_id, category, ts, value, temperature,
       zscore(value) OVER (PARTITION BY device_id ORDER BY ts) AS z,
       anomaly_score(value, 'ewma', 0.1) OVER (PARTITION BY device_id ORDER BY ts) AS score,
       CASE WHEN value < 0 THEN 'negative' ELSE 'spike' END AS kind
FROM readings
WHERE status <> 'error' AND value IS NOT NULL
QUALIFY is_anomaly(value, 4) OVER (PARTITION BY device_id ORDER BY ts)""",
}


class DemoFleet:
    """The demo stream, its pipelines and the simulator feeding it."""

    def __init__(
        self, settings: Settings, clock: Clock, streams: StreamDirectory, tables: TableNames,
        acceptor: Acceptor, pipelines: PipelineManager,
    ) -> None:  # fmt: skip
        tenant = self.tenant = DEFAULT_TENANT
        if not any(s.schema.name == "readings" for s in streams.in_tenant(tenant)):
            streams.create(
                tenant, schema_from_dict(STREAM), clock.now_ms(), taken=tables.occupied(tenant)
            )
        self.stream: StreamState = streams.get(tenant, "readings")
        s = settings
        config = SimulatorConfig(
            devices=s.demo_devices, rate=s.demo_rate, anomaly_rate=s.demo_anomaly_rate,
            disorder_ms=s.demo_disorder_ms, late_rate=s.demo_late_rate,
            malformed_rate=s.demo_malformed_rate,
        )  # fmt: skip
        self.simulator = Simulator(config, acceptor, self.stream, clock.now_ms)
        self._pipelines = pipelines

    async def start(self) -> None:
        for name, sql in PIPELINES.items():
            if name not in self._pipelines.names(self.tenant):
                await asyncio.to_thread(self._pipelines.create, self.tenant, sql)
        self.simulator.start()

    async def stop(self) -> None:
        await self.simulator.stop()
