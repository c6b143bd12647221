"""MQTT sources against a real Mosquitto: topic fields, quarantine, kill -9 with no loss."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from mqtt_broker import Broker, publish
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from serverproc import Server

STREAM = {
    "name": "telemetry",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "seq", "type": "int", "required": True, "min": 0},
        {"name": "temp", "type": "float"},
        {"name": "event_id", "type": "string"},
    ],
    "id": "event_id",
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


def source(broker: Broker, name: str = "fleet") -> dict:
    return {
        "name": name, "kind": "mqtt", "stream": "telemetry",
        "config": {"url": broker.url, "topics": ["devices/+/telemetry"], "qos": 1,
                   "topic_fields": "devices/{device_id}/telemetry", "batch_ms": 20,
                   "client_id": f"hw-{name}"},
    }  # fmt: skip


def message(device: str, seq: int) -> tuple[str, bytes]:
    body = {"seq": seq, "temp": 20.5, "event_id": f"{device}-{seq}"}
    return f"devices/{device}/telemetry", orjson.dumps(body)


def rows(c: httpx.Client) -> list[list]:
    sql = "SELECT device_id, seq FROM telemetry ORDER BY device_id, seq"
    answer = c.post("/v1/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    return answer.json()["rows"]


def wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def subscribed(c: httpx.Client, broker: Broker) -> bool:
    """Publish a probe until the source has stored it (the subscription exists then);
    its event id makes the repeats one row."""

    def probe() -> bool:
        publish(broker.port, [message("probe", 0)])
        return bool(c.get("/v1/sources/fleet").json()["rows_in"] >= 1)

    return bool(wait_for(probe))


def test_messages_are_stored_once_with_topic_fields_and_bad_ones_quarantined(
    fresh_server: Server, broker: Broker
) -> None:
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        created = c.post("/v1/sources", json=source(broker))
        assert created.status_code == 201, created.text
        assert wait_for(lambda: c.get("/v1/sources/fleet").json()["status"] == "running")
        good = [message(f"d{i % 3}", i) for i in range(300)]
        bad = [("devices/d9/telemetry", b'{"seq": -1}'), ("devices/d9/telemetry", b"not json"),
               ("devices/d9/telemetry", b"\xff\xfe binary")]  # fmt: skip
        assert subscribed(c, broker)
        publish(broker.port, good + bad + good[:50])  # 50 re-sent: stored once by event id
        expected = sorted([["probe", 0], *([d.split("/")[1], i] for i, (d, _) in enumerate(good))])
        assert wait_for(lambda: rows(c) == expected), rows(c)[:5]
        view = wait_for(
            lambda: (v := c.get("/v1/sources/fleet").json())["rows_rejected"] == 3 and v
        )
        assert view["status"] == "running" and view["duplicates"] >= 50, view
        q = wait_for(lambda: (r := c.get("/v1/streams/telemetry/quarantine").json()["rows"])
                     and len(r) == 3 and r)  # fmt: skip
        assert {r["code"] for r in q} == {"below_min", "malformed_json", "not_an_object"}, q
        assert all(r["request_id"].startswith("source:fleet:") for r in q), q
        assert c.delete("/v1/sources/fleet").status_code == 200
        assert wait_for(lambda: not session_present(broker, "hw-fleet"))


def session_present(broker: Broker, client_id: str) -> bool:
    """Whether the broker still keeps a persistent session for ``client_id``."""
    found: list[bool] = []
    c = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.on_connect = lambda _c, _u, flags, _rc, _p: found.append(flags.session_present)
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    wait_for(lambda: found, 10)
    c.disconnect()
    c.loop_stop()
    return found[0]


def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    """Messages wait in the broker while the source is paused; it is killed while it drains
    them, so messages are in flight between the broker and the log at the kill."""
    srv = Server(tmp_path / "data").start()
    total = 20_000
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            spec = source(broker)
            spec["config"]["batch_max"] = 500
            assert c.post("/v1/sources", json=spec).status_code == 201
            assert subscribed(c, broker)
            assert c.post("/v1/sources/fleet/pause").status_code == 200
            publish(broker.port, [message("d1", i) for i in range(1, total)])
            assert c.post("/v1/sources/fleet/resume").status_code == 200
            at_kill = wait_for(
                lambda: (v := c.get("/v1/sources/fleet").json())["rows_in"] > 2000 and v
            )
            assert at_kill["rows_in"] < total, at_kill  # still draining
        srv.kill()
        srv.start()
        with srv.client() as c:
            want = [["d1", i] for i in range(1, total)] + [["probe", 0]]
            got = wait_for(lambda: r if len(r := rows(c)) >= total else None)
            assert got == want
            assert c.get("/v1/sources/fleet").json()["status"] == "running"
    finally:
        srv.stop()


def test_tls_and_password(fresh_server: Server, tmp_path: Path) -> None:
    broker = Broker(tmp_path, secure=True)
    try:
        with fresh_server.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            spec = source(broker)
            spec["config"].update(username="ann", password="wrong", ca_file=broker.ca_file)
            assert c.post("/v1/sources", json=spec).status_code == 201
            refused = wait_for(lambda: (v := c.get("/v1/sources/fleet").json())["last_error"] and v)
            assert refused["status"] == "backing_off" and "refused" in refused["last_error"], (
                refused
            )
            assert refused["config"]["password"] == "***"
            assert c.delete("/v1/sources/fleet").status_code == 200
            spec["config"]["password"] = "s3cret"
            assert c.post("/v1/sources", json=spec).status_code == 201

            def stored() -> bool:
                publish(broker.port, [message("tls", 1)], secure=broker)
                return rows(c) == [["tls", 1]]

            assert wait_for(stored)
    finally:
        broker.stop()


def test_a_lost_broker_is_reconnected_with_backoff(fresh_server: Server, broker: Broker) -> None:
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        assert c.post("/v1/sources", json=source(broker)).status_code == 201
        assert subscribed(c, broker)
        broker.kill()
        down = wait_for(
            lambda: (v := c.get("/v1/sources/fleet").json())["status"] == "backing_off" and v
        )
        assert down and "Connection" in down["last_error"], down  # lost, then refused
        broker.start()  # a new broker on the same port: no session kept, subscribed again

        def stored() -> bool:
            publish(broker.port, [message("back", 1)])
            return ["back", 1] in rows(c)

        assert wait_for(stored)
        assert c.get("/v1/sources/fleet").json()["status"] == "running"
