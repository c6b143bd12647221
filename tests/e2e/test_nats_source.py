"""NATS sources against a real nats-server: JetStream exactly-once across kill -9, core
subjects, subject fields, quarantine, and the 400s of a bad config."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from nats_server import NatsServer
from serverproc import Server

# No event id: a message stored twice would show as two rows.
STREAM = {
    "name": "telemetry",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "seq", "type": "int", "required": True, "min": 0},
        {"name": "temp", "type": "float"},
    ],
}


def tenant(server: Server, name: str) -> httpx.Client:
    """A client of a new tenant of the module's server (its own streams, sources, sinks)."""
    with server.client() as c:
        answer = c.post("/v1/tenants", json={"name": name})
        assert answer.status_code == 201, answer.text
    return server.client(answer.json()["admin_key"]["key"])


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    s = NatsServer(tmp_path)
    yield s
    s.stop()


def source(ns: NatsServer, name: str = "fleet", **config: Any) -> dict[str, Any]:
    return {
        "name": name, "kind": "nats", "stream": "telemetry",
        "config": {"url": ns.url, "subjects": ["devices.*.telemetry"], "stream": "DEVICES",
                   "subject_fields": "devices.{device_id}.telemetry", **config},
    }  # fmt: skip


def message(device: str, seq: int) -> tuple[str, bytes]:
    return f"devices.{device}.telemetry", orjson.dumps({"seq": seq, "temp": 20.5})


def rows(c: httpx.Client) -> list[list[Any]]:
    sql = "SELECT device_id, seq FROM telemetry ORDER BY device_id, seq"
    answer = c.post("/v1/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["rows"])


def wait_for(check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def consumers(ns: NatsServer, stream: str) -> list[Any]:
    async def names(js: Any) -> list[Any]:
        return [(i.name, i.ack_floor.stream_seq) for i in await js.consumers_info(stream)]

    return list(ns.run(names))


def test_jetstream_messages_stored_once_with_subject_fields_and_bad_ones_quarantined(
    server: Server, nats_server: NatsServer
) -> None:
    nats_server.add_stream("DEVICES", ["devices.>"])
    good = [message(f"d{i % 3}", i) for i in range(300)]
    bad = [("devices.d9.telemetry", b'{"seq": -1}'), ("devices.d9.telemetry", b"not json")]
    nats_server.publish(good[:100] + bad)  # before the source exists: replayed
    with tenant(server, "js_tenant") as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        created = c.post("/v1/sources", json=source(nats_server, batch_max=40))
        assert created.status_code == 201, created.text
        nats_server.publish(good[100:])
        expected = sorted([d.split(".")[1], i] for i, (d, _) in enumerate(good))
        assert wait_for(lambda: rows(c) == expected), rows(c)[:5]
        view = wait_for(
            lambda: (v := c.get("/v1/sources/fleet").json())["rows_rejected"] == 2 and v
        )
        assert view["status"] == "running" and view["rows_in"] == 300, view
        assert view["positions"] == {"DEVICES": "302"} and view["lag"] == 0, view
        q = c.get("/v1/streams/telemetry/quarantine").json()["rows"]
        assert {r["code"] for r in q} == {"below_min", "malformed_json"}, q
        assert all(r["request_id"].startswith("source:fleet:") for r in q), q
        # paused: messages wait in the stream; resumed: read once, from the committed seq
        assert c.post("/v1/sources/fleet/pause").status_code == 200
        nats_server.publish([message("d7", i) for i in range(50)])
        assert c.post("/v1/sources/fleet/resume").status_code == 200
        more = sorted(expected + [["d7", i] for i in range(50)])
        assert wait_for(lambda: rows(c) == more), len(rows(c))
        ours = [n for n, _ in consumers(nats_server, "DEVICES") if n.startswith("headwater-")]
        assert len(ours) == 1, ours
        assert c.delete("/v1/sources/fleet").status_code == 200
        assert wait_for(lambda: not consumers(nats_server, "DEVICES"), 20)


def test_kill_9_mid_stream_loses_nothing_and_doubles_nothing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    """The stream holds 20,000 messages; the server is killed while the source drains them,
    so chunks are between the stream and the log at the kill. The stream has no event id:
    every row is stored once because positions are, not by deduplication."""
    total = 20_000
    nats_server.add_stream("DEVICES", ["devices.>"])
    nats_server.publish([message("d1", i) for i in range(total)])
    srv = Server(tmp_path / "data").start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            spec = source(nats_server, batch_max=200)
            assert c.post("/v1/sources", json=spec).status_code == 201
            at_kill = wait_for(
                lambda: (v := c.get("/v1/sources/fleet").json())["rows_in"] > 2000 and v
            )
            assert at_kill["rows_in"] < total, at_kill  # still draining
        srv.kill()
        srv.start()
        with srv.client() as c:
            want = [["d1", i] for i in range(total)]
            got = wait_for(lambda: r if len(r := rows(c)) >= total else None)
            assert got == want
            view = wait_for(
                lambda: (
                    (v := c.get("/v1/sources/fleet").json())["positions"] == {"DEVICES": str(total)}
                    and v
                )
            )
            assert view["status"] == "running", view
        assert wait_for(lambda: consumers(nats_server, "DEVICES")[0][1] == total, 20)
    finally:
        srv.stop()


def test_core_subjects_at_most_once(server: Server, nats_server: NatsServer) -> None:
    with tenant(server, "core_tenant") as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        spec = source(nats_server, mode="core", subjects=["devices.>"])
        del spec["config"]["stream"]
        assert c.post("/v1/sources", json=spec).status_code == 201, spec

        def subscribed() -> bool:  # publish a probe until one arrives: subscribed then
            nats_server.core_publish([message("probe", 0)])
            return bool(c.get("/v1/sources/fleet").json()["rows_in"] >= 1)

        assert wait_for(subscribed)
        nats_server.core_publish([message("d2", i) for i in range(500)])
        want = [["d2", i] for i in range(500)]
        assert wait_for(lambda: [r for r in rows(c) if r[0] != "probe"] == want), rows(c)[-3:]
        view = c.get("/v1/sources/fleet").json()
        assert view["positions"] == {"subscription": str(view["rows_in"])}, view


def test_a_lost_server_backs_off_and_resumes(server: Server, nats_server: NatsServer) -> None:
    nats_server.add_stream("DEVICES", ["devices.>"])
    with tenant(server, "lost_tenant") as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        assert c.post("/v1/sources", json=source(nats_server)).status_code == 201
        nats_server.publish([message("a", i) for i in range(10)])
        assert wait_for(lambda: len(rows(c)) == 10)
        nats_server.kill()
        down = wait_for(
            lambda: (v := c.get("/v1/sources/fleet").json())["status"] == "backing_off" and v
        )
        assert down and down["last_error"], down
        nats_server.start()  # the stream and the consumer were kept on disk
        nats_server.publish([message("a", i) for i in range(10, 20)])
        assert wait_for(lambda: rows(c) == [["a", i] for i in range(20)]), rows(c)
        assert wait_for(lambda: c.get("/v1/sources/fleet").json()["status"] == "running")


@pytest.mark.parametrize(
    ("config", "words"),
    [
        ({"url": "http://x", "subjects": ["a"]}, "config.url"),
        ({"url": "nats://127.0.0.1:4222"}, "config.subjects"),
        ({"url": "nats://127.0.0.1:4222", "subjects": ["a b"]}, "config.subjects"),
        ({"url": "nats://h:1", "subjects": ["a"], "mode": "x"}, "config.mode"),
        ({"url": "nats://h:1", "subjects": ["a"], "durable": "a.b"}, "config.durable"),
        ({"url": "nats://h:1", "subjects": ["a"], "mode": "core", "stream": "S"}, "jetstream"),
        ({"url": "nats://h:1", "subjects": ["a"], "batch_max": 0}, "config.batch_max"),
        ({"url": "nats://h:1", "subjects": ["a"], "start": "now"}, "config.start"),
    ],
)
def test_a_bad_config_is_refused_saying_what_to_fix(
    server: Server, config: dict[str, Any], words: str
) -> None:
    with server.client() as c:
        c.post("/v1/streams", json=STREAM)
        spec = {"name": "bad", "kind": "nats", "stream": "telemetry", "config": config}
        answer = c.post("/v1/sources", json=spec)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "bad_source_config"
        assert words in answer.json()["error"]["message"], answer.text
