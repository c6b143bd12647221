"""The demo's MQTT device fleet, when ``demo_mqtt_url`` names a broker.

The demo starts no broker: given one, it makes a ``fleet_telemetry`` stream, an ``mqtt``
source (``mqtt_fleet``) subscribed to ``fleet/+/telemetry`` with the device id taken from
the topic, and publishes a small simulated fleet's telemetry to that broker (QoS 1, one
message per device and second, the device id only in the topic). Without the setting,
nothing MQTT happens: a ``mqtt_fleet`` source left by an earlier run is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from headwater.connectors.sources.registry import Sources
from headwater.ingest.streams import StreamDirectory
from headwater.ingest.tables import TableNames
from headwater.model.schema import schema_from_dict
from headwater.model.time import Clock

log = structlog.get_logger("headwater.demo")

SOURCE = "mqtt_fleet"
TOPICS = "fleet/+/telemetry"
DEVICES = 12
PERIOD_S = 1.0  # each device publishes once per period

STREAM = {
    "name": "fleet_telemetry",
    "description": "Simulated MQTT device fleet (topics fleet/<device>/telemetry)",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float", "min": -50, "max": 150},
        {"name": "battery", "type": "float", "min": 0, "max": 100},
        {"name": "rssi", "type": "int"},
        {"name": "event_id", "type": "string"},
    ],
    "event_time": "ts",
    "key": ["device_id"],
    "id": "event_id",
}


def source_spec(url: str) -> dict[str, Any]:
    """The ``mqtt`` source's spec; credentials in the URL become its username and password."""
    u = urlsplit(url)
    config: dict[str, Any] = {
        "url": f"{u.scheme}://{u.hostname}" + (f":{u.port}" if u.port else ""),
        "topics": [TOPICS], "qos": 1, "topic_fields": "fleet/{device_id}/telemetry",
        "client_id": "headwater-demo-fleet",
    }  # fmt: skip
    if u.username:
        config["username"] = u.username
    if u.password:
        config["password"] = u.password
    return {"name": SOURCE, "kind": "mqtt", "stream": STREAM["name"], "config": config}


def ensure(
    tenant: str, url: str | None, clock: Clock, streams: StreamDirectory, tables: TableNames,
    sources: Sources,
) -> None:  # fmt: skip
    """The stream and the source as the setting wants them (the source dropped without it)."""
    current = next((r for r in sources.in_tenant(tenant) if r.name == SOURCE), None)
    wanted = source_spec(url) if url else None
    if current is not None and (wanted is None or current.config != wanted["config"]):
        sources.drop(tenant, SOURCE)
        current = None
    if wanted is None:
        return
    name = str(STREAM["name"])
    if not any(s.schema.name == name for s in streams.in_tenant(tenant)):
        streams.create(
            tenant, schema_from_dict(STREAM), clock.now_ms(), taken=tables.occupied(tenant)
        )
    if current is None:
        sources.create(tenant, wanted, {name})


class MqttFleet:
    """Publishes the simulated devices' telemetry to the broker while ``running``."""

    def __init__(self, url: str, clock: Clock) -> None:
        u = urlsplit(url)
        self._host, self._tls = u.hostname or "localhost", u.scheme == "mqtts"
        self._port = u.port or (8883 if self._tls else 1883)
        self._user, self._password = u.username, u.password
        self._clock = clock
        self._epoch = clock.now_ms()  # event ids of this run never collide with an earlier one's
        self._seq = 0
        self._rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._client: Client | None = None
        self.running = True
        self.published = 0

    def start(self) -> None:
        c = Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        if self._tls:
            c.tls_set()
        if self._user:
            c.username_pw_set(self._user, self._password)
        c.reconnect_delay_set(1, 10)
        c.connect_async(self._host, self._port)  # the loop connects, and reconnects
        c.loop_start()
        self._client = c
        self._task = asyncio.create_task(self._run(), name="demo-mqtt-fleet")

    async def _run(self) -> None:
        while True:
            c = self._client
            if self.running and c is not None and c.is_connected():
                for topic, payload in self._readings():
                    c.publish(topic, payload, qos=1)
                    self.published += 1
            await asyncio.sleep(PERIOD_S)

    def _readings(self) -> list[tuple[str, bytes]]:
        now, rng, out = self._clock.now_ms(), self._rng, []
        for dev in range(DEVICES):
            self._seq += 1
            body = {
                "ts": datetime.fromtimestamp(now / 1000, UTC).isoformat(timespec="milliseconds"),
                "temperature": round(18 + dev % 6 + rng.gauss(0, 0.4), 2),
                "battery": round(max(0.0, 100 - (self._seq % 5000) / 50 - dev), 1),
                "rssi": rng.randrange(-90, -40),
                "event_id": f"mqtt-{self._epoch}-{self._seq}",
            }
            out.append((f"fleet/gw-{dev:02d}/telemetry", orjson.dumps(body)))
        return out

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
        log.info("demo_mqtt_fleet_stopped", published=self.published)
