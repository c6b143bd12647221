"""The demo's content: a ``readings`` stream, sample pipelines, an alert rule and the
simulated fleet.

``headwater demo`` builds the runtime with a ``DemoFleet``: the stream and the
``simulator`` source are created when missing, the pipelines and the ``anomaly`` alert
rule when the runtime starts; the source runtime runs the simulator like any source (the
classic demo endpoints pause and resume it). With ``demo_mqtt_url``, an MQTT device
fleet is published to that broker and read back (``headwater.runtime.demo_mqtt``).
"""

from __future__ import annotations

import asyncio

from headwater.alerts.service import Alerts
from headwater.connectors.sources.registry import Sources
from headwater.connectors.sources.simulator import CATEGORIES, SimulatorConfig
from headwater.ingest.streams import StreamDirectory, StreamState
from headwater.ingest.tables import TableNames
from headwater.model.schema import schema_from_dict
from headwater.model.time import Clock
from headwater.pipelines.manager import PipelineManager
from headwater.runtime import demo_mqtt
from headwater.runtime.demo_mqtt import MqttFleet
from headwater.runtime.opening import DEFAULT_TENANT
from headwater.settings import Settings

SOURCE = "simulator"

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

# Fires for a device as soon as ``anomalies`` has a reading of it that ``is_anomaly`` flags
# (|z| > 4, the threshold of its QUALIFY); no channel: the dashboard's Alerts page shows it.
ALERT = {
    "name": "anomaly",
    "from": "anomalies",
    "key": "device_id",
    "condition": "abs(z) > 4",
    "for": "1s",
    "severity": "warning",
    "labels": {"demo": "true"},
    "summary": "$device_id: $kind reading $value (z = $z, score $score)",
    "channels": [],
}


class DemoFleet:
    """The demo stream, its pipelines and the ``simulator`` source feeding it.

    The source is an ordinary one (``GET /v1/sources/simulator``): the source runtime runs
    it, and the classic endpoints pause and resume it. Its config follows the ``demo_*``
    settings; when they change, the source is made anew (its event ids carry its epoch,
    so the new one's never collide with the old one's).
    """

    def __init__(
        self, settings: Settings, clock: Clock, streams: StreamDirectory, tables: TableNames,
        sources: Sources, pipelines: PipelineManager, alerts: Alerts,
    ) -> None:  # fmt: skip
        tenant = self.tenant = DEFAULT_TENANT
        if not any(s.schema.name == "readings" for s in streams.in_tenant(tenant)):
            streams.create(
                tenant, schema_from_dict(STREAM), clock.now_ms(), taken=tables.occupied(tenant)
            )
        self.stream: StreamState = streams.get(tenant, "readings")
        s = settings
        self.config = SimulatorConfig(
            devices=s.demo_devices, rate=s.demo_rate, anomaly_rate=s.demo_anomaly_rate,
            disorder_ms=s.demo_disorder_ms, late_rate=s.demo_late_rate,
            malformed_rate=s.demo_malformed_rate,
        )  # fmt: skip
        self._sources, self._pipelines, self._alerts = sources, pipelines, alerts
        self._tables, self._clock, self._streams = tables, clock, streams
        self._mqtt_url = s.demo_mqtt_url
        self.mqtt = MqttFleet(s.demo_mqtt_url, clock) if s.demo_mqtt_url else None

    @property
    def running(self) -> bool:
        rec = next((r for r in self._sources.in_tenant(self.tenant) if r.name == SOURCE), None)
        return rec is not None and rec.status == "running"

    @property
    def sent(self) -> int:
        """Events sent since the server started: stored, quarantined or duplicates."""
        rec = next((r for r in self._sources.in_tenant(self.tenant) if r.name == SOURCE), None)
        if rec is None:
            return 0
        stats = self._sources.stats(rec)
        return stats.rows_in + stats.rows_rejected + stats.duplicates

    def resume(self) -> bool:
        """Run the simulator; False when it already ran. On the event loop (the source
        runtime starts the source's task)."""
        if self.running:
            return False
        self._sources.set_status(self.tenant, SOURCE, "running")
        if self.mqtt is not None:
            self.mqtt.running = True
        return True

    def pause(self) -> bool:
        """Pause the simulator; False when it was already paused."""
        if not self.running:
            return False
        self._sources.set_status(self.tenant, SOURCE, "paused")
        if self.mqtt is not None:
            self.mqtt.running = False
        return True

    async def start(self) -> None:
        """Create what is missing; the source runtime (started before) runs the source."""
        for name, sql in PIPELINES.items():
            if name not in self._pipelines.names(self.tenant):
                await asyncio.to_thread(self._pipelines.create, self.tenant, sql)
        if not any(r.rule.name == ALERT["name"] for r in self._alerts.in_tenant(self.tenant)):
            tables = self._tables.readable(self.tenant)
            await asyncio.to_thread(self._alerts.create, self.tenant, ALERT, tables, False)
        sources, wanted = self._sources, self.config.to_dict()
        current = next((r for r in sources.in_tenant(self.tenant) if r.name == SOURCE), None)
        if current is not None and (current.config != wanted or current.kind != "simulator"):
            sources.drop(self.tenant, SOURCE)
            current = None
        if current is None:
            spec = {"name": SOURCE, "kind": "simulator", "stream": "readings", "config": wanted}
            sources.create(self.tenant, spec, {"readings"})
        self.resume()  # the demo streams from the start, even if it was paused last time
        demo_mqtt.ensure(
            self.tenant, self._mqtt_url, self._clock, self._streams, self._tables, sources
        )
        if self.mqtt is not None:
            self.mqtt.start()

    async def stop(self) -> None:
        """Stop the MQTT fleet's publisher; the source runtime stops the sources."""
        if self.mqtt is not None:
            await self.mqtt.stop()
