"""`headwater demo` with an MQTT broker: a device fleet published to it and read back.

The demo starts no broker: these tests run a private Mosquitto and point
``HEADWATER_DEMO_MQTT_URL`` at it. Without the setting the demo has no MQTT source.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from mqtt_broker import Broker
from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from headwater.settings import Settings
from serverproc import Server


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


def wait_for(check, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def fleet_rows(c: httpx.Client) -> list[list[Any]]:
    sql = "SELECT device_id, count(*) AS n FROM fleet_telemetry GROUP BY device_id ORDER BY 1"
    answer = c.post("/v1/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    rows: list[list[Any]] = answer.json()["rows"]
    return rows


class Listener:
    """An independent subscriber: what the demo publishes, as the broker delivers it."""

    def __init__(self, broker: Broker) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._c = Client(CallbackAPIVersion.VERSION2, client_id="", clean_session=True)
        self._c.on_message = self._on_message
        self._c.connect("127.0.0.1", broker.port)
        self._c.subscribe("fleet/#", qos=1)
        self._c.loop_start()

    def _on_message(self, _c: Client, _u: object, msg: MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, orjson.loads(msg.payload)))

    def seen(self) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._c.disconnect()
        self._c.loop_stop()


def test_the_demo_publishes_a_fleet_to_the_broker_and_reads_it_back(
    tmp_path: Path, broker: Broker
) -> None:
    listener = Listener(broker)
    data = tmp_path / "data"
    srv = Server(data, command="demo", HEADWATER_DEMO_RATE="50",
                 HEADWATER_DEMO_MQTT_URL=broker.url).start()  # fmt: skip
    try:
        with srv.client() as c:
            source = c.get("/v1/sources/mqtt_fleet").json()
            assert source["kind"] == "mqtt" and source["stream"] == "fleet_telemetry"
            assert source["config"]["url"] == broker.url
            # the messages go through the broker, the device id only in their topic
            got = wait_for(listener.seen)
            assert got, "nothing was published to the broker"
            topic, body = got[0]
            assert topic.startswith("fleet/gw-") and topic.endswith("/telemetry")
            assert "device_id" not in body and {"ts", "temperature", "event_id"} <= set(body)
            # and come back through the mqtt source, the device id taken from the topic
            rows = wait_for(lambda: len(fleet_rows(c)) >= 3 and fleet_rows(c))
            assert rows, "no row of the MQTT fleet reached fleet_telemetry"
            assert all(device.startswith("gw-") and n >= 1 for device, n in rows)
            assert c.get("/v1/sources/mqtt_fleet").json()["rows_in"] >= len(rows)
            # the simulator's stream is fed as without MQTT
            assert httpx.get(srv.url + "/api/v1/health").json()["ingestion"] == "running"
    finally:
        srv.stop()
        listener.close()
    # without the setting, the next start has no MQTT source (the stream and its rows stay)
    srv = Server(data, command="demo", HEADWATER_DEMO_RATE="50").start()
    try:
        with srv.client() as c:
            names = [s["name"] for s in c.get("/v1/sources").json()["sources"]]
            assert names == ["simulator"]
            assert fleet_rows(c)
    finally:
        srv.stop()


@pytest.mark.parametrize("url", ["http://nope:1883", "mqtt://", "127.0.0.1:1883"])
def test_a_malformed_broker_url_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="demo_mqtt_url"):
        Settings(demo_mqtt_url=url)
    assert Settings(demo_mqtt_url="mqtts://ann:s3cret@broker:8883").demo_mqtt_url
