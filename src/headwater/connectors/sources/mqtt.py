"""MQTT source (kind ``mqtt``): subscribe to topic filters, QoS 1, persistent session.

A message is acknowledged to the broker (PUBACK) only after the log entry holding it is
durable: the client runs with ``manual_ack`` and the runtime calls the chunk's ``done``
after the commit. With a persistent session (``clean_session`` false and a stable
client id) the broker keeps every message not yet acknowledged and delivers it again
after a crash, so nothing is lost; a stream with an ``id`` field stores each one once.

Messages are batched (up to ``batch_max`` messages or ``batch_ms`` milliseconds) into
one log entry. Levels of the topic can become fields: ``topic_fields`` is either a
pattern with named levels, ``"devices/{device_id}/telemetry"``, or
``{"pattern": "devices/+/telemetry", "fields": {"1": "device_id"}}``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import Chunk, End, Reader
from headwater.errors import BadRequest

CONNECT_TIMEOUT_S = 10.0
PARTITION = "subscription"


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_source_config")


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    tls: bool
    topics: tuple[str, ...]
    qos: int
    username: str | None
    password: str | None
    client_id: str | None
    fields: tuple[tuple[int, str], ...]  # topic level index -> field name
    fmt: str
    batch_max: int
    batch_ms: int
    ca_file: str | None

    @classmethod
    def parse(cls, c: dict[str, Any]) -> MqttConfig:
        url = urlsplit(str(c.get("url", "")))
        if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
            raise _bad("config.url must look like mqtt://host:1883 or mqtts://host:8883")
        topics = c.get("topics")
        topics = [topics] if isinstance(topics, str) else topics
        if not topics or not all(isinstance(t, str) and t for t in topics):
            raise _bad('config.topics must list topic filters, e.g. ["devices/+/telemetry"]')
        qos = c.get("qos", 1)
        if qos not in (0, 1):
            raise _bad("config.qos must be 0 or 1 (1: nothing is lost across restarts)")
        fmt = c.get("format", "json")
        if fmt not in ("json", "ndjson"):
            raise _bad("config.format must be json (one object per message) or ndjson")
        batch_max, batch_ms = c.get("batch_max", 5000), c.get("batch_ms", 50)
        if not (isinstance(batch_max, int) and batch_max > 0 and isinstance(batch_ms, int)):
            raise _bad("config.batch_max and config.batch_ms must be positive integers")
        return cls(
            url.hostname, url.port or (8883 if url.scheme == "mqtts" else 1883),
            url.scheme == "mqtts", tuple(topics), qos, c.get("username"), c.get("password"),
            c.get("client_id"), topic_fields(c.get("topic_fields")), fmt, batch_max,
            max(1, batch_ms), c.get("ca_file"),
        )  # fmt: skip


def topic_fields(spec: Any, sep: str = "/") -> tuple[tuple[int, str], ...]:
    """Which topic levels become which fields (``sep``: ``.`` for NATS subjects).

    >>> topic_fields("devices/{device_id}/telemetry")
    ((1, 'device_id'),)
    >>> topic_fields({"pattern": "site/+/+/t", "fields": {"1": "site", "2": "room"}})
    ((1, 'site'), (2, 'room'))
    """
    if spec is None:
        return ()
    if isinstance(spec, str):
        levels = spec.split(sep)
        return tuple((i, lv[1:-1]) for i, lv in enumerate(levels) if lv.startswith("{"))
    if isinstance(spec, dict) and isinstance(spec.get("fields"), dict):
        try:
            return tuple(sorted((int(k), str(v)) for k, v in spec["fields"].items()))
        except ValueError as exc:
            raise _bad("config.topic_fields.fields maps level numbers to field names") from exc
    raise _bad('config.topic_fields: "devices/{device_id}/telemetry" or {"pattern", "fields"}')


def with_topic_fields(
    payload: bytes, topic: str, fields: tuple[tuple[int, str], ...], sep: str = "/"
) -> bytes:
    """One NDJSON line: the payload object with the topic's fields first (the payload's own
    values win); anything else stays as it is, to be rejected with its text.

    >>> with_topic_fields(b'{"t": 1}', "devices/d7/telemetry", ((1, "device_id"),))
    b'{"device_id":"d7","t": 1}'
    """
    line = payload.strip()
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:  # binary: a JSON string, rejected alone as not an object
        return orjson.dumps(line.decode("utf-8", "backslashreplace"))
    if b"\n" in line or b"\r" in line:
        try:
            line = orjson.dumps(orjson.loads(line))
        except orjson.JSONDecodeError:
            line = line.replace(b"\r", b" ").replace(b"\n", b" ")
    if not fields or not line.startswith(b"{"):
        return line
    levels = topic.split(sep)
    head = b",".join(
        orjson.dumps(name) + b":" + orjson.dumps(levels[i]) for i, name in fields if i < len(levels)
    )
    rest = line[1:].lstrip()
    return b"{" + head + (b"" if rest.startswith(b"}") else b",") + rest


class MqttSource:
    """The ``PullSource`` of an MQTT subscription: one partition, read by one client."""

    def __init__(self, rec: SourceRecord) -> None:
        self.config = MqttConfig.parse(rec.config)
        self.client_id = (
            self.config.client_id or f"headwater-{rec.tenant}-{rec.name}-{rec.created_ms}"
        )

    def partitions(self, committed: object) -> list[str]:
        return [PARTITION]

    def open(self, partition: str, position: str | None) -> Reader:
        return MqttReader(self.config, self.client_id, int(position or 0))

    def forget(self) -> None:
        """End the broker's session of a deleted source (a clean connect drops it)."""
        cfg = self.config
        c = Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            c.tls_set(ca_certs=cfg.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        c.connect(cfg.host, cfg.port, keepalive=10)
        c.loop_start()
        c.disconnect()
        c.loop_stop()


class MqttReader:
    """One client, driven by the reader's own thread (no paho thread, no queue): a read
    waits on the socket, decodes what arrived, and sends the acks of durable chunks.

    ``done`` may be called while a read runs (the next chunk read ahead, in a process of
    its own): it only queues the acks and wakes the read's wait, which sends them, so the
    client is used by one thread and a broker that limits the messages in flight is not
    kept waiting for them."""

    def __init__(self, cfg: MqttConfig, client_id: str, count: int) -> None:
        self._cfg = cfg
        self._count = count  # messages committed so far: the partition's position
        self._inbox: list[MQTTMessage] = []
        self._acks: list[tuple[int, int]] = []  # durable, to send
        self._lock = threading.Lock()
        # a read still running in its thread when the source is paused finishes first
        self._busy = threading.Lock()
        self._wake, self._waker = socket.socketpair()  # ``_durable`` ends a read's wait
        self._waker.setblocking(False)
        self._error: str | None = None
        self._connected = False
        c = Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                   manual_ack=True)  # fmt: skip
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        if cfg.tls:
            c.tls_set(ca_certs=cfg.ca_file, cert_reqs=ssl.CERT_REQUIRED)
        c.on_connect, c.on_disconnect = self._on_connect, self._on_disconnect
        c.on_message = self._on_message
        self._client = c
        try:
            c.connect(cfg.host, cfg.port, keepalive=30)  # OSError: the runtime backs off
            deadline = time.monotonic() + CONNECT_TIMEOUT_S
            while not self._connected:
                if self._error is not None or time.monotonic() > deadline:
                    c.disconnect()
                    raise ConnectionError(self._error or f"no answer from {cfg.host}:{cfg.port}")
                self._pump(0.1)
        except BaseException:
            self._wake.close()
            self._waker.close()
            raise

    def _on_connect(
        self, c: Client, _u: Any, flags: ConnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        if rc.is_failure:
            self._error = f"the broker refused the connection: {rc}"
            return
        self._connected = True
        c.subscribe([(t, self._cfg.qos) for t in self._cfg.topics])

    def _on_disconnect(
        self, _c: Client, _u: Any, _f: DisconnectFlags, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self._connected = False
        if self._error is None:  # a refused connect also disconnects: keep why
            self._error = f"disconnected from the broker: {rc}"

    def _on_message(self, _c: Client, _u: Any, msg: MQTTMessage) -> None:
        self._inbox.append(msg)

    def _pump(self, timeout_s: float) -> None:
        """Send pending acks, wait for the socket, read every message that has arrived."""
        c = self._client
        self._send_acks()
        sock = c.socket()
        if sock is None:
            raise ConnectionError(self._error or "not connected to the broker")
        readable, writable, _ = select.select(
            [sock, self._wake], [sock] if c.want_write() else [], [], max(0.0, timeout_s)
        )
        if self._wake in readable:
            self._wake.recv(4096)
            self._send_acks()
        if writable:
            self._check(c.loop_write())
        if sock in readable:  # one packet per loop_read: read on while messages keep coming
            while len(self._inbox) < self._cfg.batch_max:
                before = len(self._inbox)
                self._check(c.loop_read())
                if len(self._inbox) == before:
                    break
        self._check(c.loop_misc())

    def _send_acks(self) -> None:
        with self._lock:
            acks, self._acks = self._acks, []
        for mid, qos in acks:
            self._client.ack(mid, qos)

    def _check(self, rc: MQTTErrorCode) -> None:
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._error is not None:
            raise ConnectionError(self._error or f"connection to the broker lost: {rc.name}")

    def read(self, timeout_s: float) -> Chunk | End | None:
        with self._busy:
            return self._read(timeout_s)

    def _read(self, timeout_s: float) -> Chunk | End | None:
        deadline = time.monotonic() + timeout_s
        while not self._inbox:
            self._pump(deadline - time.monotonic())
            if time.monotonic() >= deadline:
                break
        if not self._inbox:
            return None
        full = time.monotonic() + self._cfg.batch_ms / 1000
        while len(self._inbox) < self._cfg.batch_max and (left := full - time.monotonic()) > 0:
            self._pump(left)
        msgs = self._inbox[: self._cfg.batch_max]
        del self._inbox[: self._cfg.batch_max]
        return self._chunk(msgs)

    def _chunk(self, msgs: list[MQTTMessage]) -> Chunk:
        fields = self._cfg.fields
        if self._cfg.fmt == "ndjson":
            lines = [with_topic_fields(bytes(line), m.topic, fields)
                     for m in msgs for line in m.payload.splitlines() if line.strip()]  # fmt: skip
        else:
            lines = [with_topic_fields(bytes(m.payload), m.topic, fields) for m in msgs]
        self._count += len(msgs)
        acks = [(m.mid, m.qos) for m in msgs if m.qos > 0]
        return Chunk(b"\n".join(lines) + b"\n", "ndjson", PARTITION, str(self._count),
                     done=lambda: self._durable(acks))  # fmt: skip

    def _durable(self, acks: list[tuple[int, int]]) -> None:
        """Called once the chunk is in the log: the read running now, or the next one,
        sends its acks."""
        with self._lock:
            self._acks += acks
        with contextlib.suppress(OSError):  # full: a wake is pending anyway; closed: gone
            self._waker.send(b"\0")

    def close(self) -> None:
        with self._busy:
            try:
                if self._connected:
                    self._pump(0)  # the acks of durable chunks
                    self._client.disconnect()
            except (ConnectionError, OSError):
                pass  # unacknowledged messages come again with the next session
            finally:
                self._wake.close()
                self._waker.close()
