"""What both NATS source modes share: the config, the connection, the client's thread.

nats-py is asyncio: each reader runs its client on an event loop in a thread of its own
(``LoopThread``), and ``read`` (called from the runtime's worker threads) waits on it.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from headwater.connectors.sources.mqtt import topic_fields, with_topic_fields
from headwater.errors import BadRequest

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5
CALL_SLACK_S = 15.0  # beyond a call's own timeout, before its loop is deemed stuck
DURABLE_RE = re.compile(r"^[A-Za-z0-9_-]{1,200}$")
SUBJECT_RE = re.compile(r"^[^\s]+$")


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_source_config")


@dataclass(frozen=True)
class NatsConfig:
    servers: tuple[str, ...]
    subjects: tuple[str, ...]
    mode: str  # jetstream | core
    stream: str | None
    durable: str | None
    queue: str | None
    start: str  # earliest | latest: where a consumer with nothing committed begins
    fields: tuple[tuple[int, str], ...]
    fmt: str
    batch_max: int
    ack_wait_s: float
    user: str | None
    password: str | None
    token: str | None
    ca_file: str | None

    @classmethod
    def parse(cls, c: dict[str, Any]) -> NatsConfig:
        url = c.get("url")
        servers = [url] if isinstance(url, str) else url
        if not servers or not all(
            isinstance(s, str) and s.startswith(("nats://", "tls://")) for s in servers
        ):
            raise _bad('config.url must look like "nats://host:4222" (or tls://, or a list)')
        subjects = c.get("subjects", c.get("subject"))
        subjects = [subjects] if isinstance(subjects, str) else subjects
        if not subjects or not all(isinstance(s, str) and SUBJECT_RE.match(s) for s in subjects):
            raise _bad('config.subjects must list subjects, e.g. ["orders.>"] (no spaces)')
        mode = c.get("mode", "jetstream")
        if mode not in ("jetstream", "core"):
            raise _bad("config.mode: jetstream (exactly-once, replays) or core (at-most-once)")
        stream, durable, queue = c.get("stream"), c.get("durable"), c.get("queue")
        if stream is not None and not (isinstance(stream, str) and DURABLE_RE.match(stream)):
            raise _bad("config.stream: the JetStream stream's name (letters, digits, - and _)")
        if durable is not None and not (isinstance(durable, str) and DURABLE_RE.match(durable)):
            raise _bad("config.durable: a consumer name of letters, digits, - and _")
        if mode == "core" and (stream is not None or durable is not None):
            raise _bad("config.stream and config.durable are for mode jetstream")
        if queue is not None and (mode != "core" or not isinstance(queue, str) or not queue):
            raise _bad("config.queue: a queue group name, for mode core only")
        start = c.get("start", "earliest")
        if start not in ("earliest", "latest"):
            raise _bad("config.start: earliest (the whole stream) or latest (new messages)")
        fmt = c.get("format", "json")
        if fmt not in ("json", "ndjson"):
            raise _bad("config.format must be json (one object per message) or ndjson")
        batch_max, ack_wait = c.get("batch_max", 5000), c.get("ack_wait_s", 30)
        if not (isinstance(batch_max, int) and 0 < batch_max <= 100_000):
            raise _bad("config.batch_max: messages per log entry, 1 to 100000")
        if not (isinstance(ack_wait, int | float) and ack_wait >= 1):
            raise _bad("config.ack_wait_s: seconds JetStream waits for an ack, at least 1")
        try:
            fields = topic_fields(c.get("subject_fields"), ".")
        except BadRequest as exc:
            raise _bad('config.subject_fields: e.g. "devices.{device_id}.telemetry"') from exc
        return cls(
            tuple(servers), tuple(subjects), mode, stream, durable, queue, start, fields, fmt,
            batch_max, float(ack_wait), c.get("user"), c.get("password"), c.get("token"),
            c.get("ca_file"),
        )  # fmt: skip


async def connect(
    cfg: NatsConfig, errors: list[str] | None = None, lost: Callable[[], None] = lambda: None
) -> NatsClient:
    """A client that does not reconnect by itself: a lost connection fails the reader, and
    the runtime backs off and opens a new one from the committed position. ``lost`` is
    called when the connection goes (to end a wait at once)."""

    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(f"{type(exc).__name__}: {exc}")

    async def on_disconnect() -> None:
        if errors is not None:
            errors.append("disconnected from the NATS server")
        lost()

    tls = None
    if any(s.startswith("tls://") for s in cfg.servers) or cfg.ca_file:
        tls = ssl.create_default_context(cafile=cfg.ca_file)
    return await nats.connect(
        servers=list(cfg.servers), name="headwater", allow_reconnect=False,
        max_reconnect_attempts=1, reconnect_time_wait=0,  # one try (0: forever)
        connect_timeout=CONNECT_TIMEOUT_S, error_cb=on_error, disconnected_cb=on_disconnect,
        user=cfg.user, password=cfg.password, token=cfg.token, tls=tls,
    )  # fmt: skip


class LoopThread:
    """An event loop running in a thread of its own; ``call`` waits for a coroutine on it."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s + CALL_SLACK_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


def lines(cfg: NatsConfig, msgs: list[Msg]) -> bytes:
    f = cfg.fields
    if cfg.fmt == "ndjson":
        lines = [with_topic_fields(bytes(line), m.subject, f, ".")
                 for m in msgs for line in m.data.splitlines() if line.strip()]  # fmt: skip
    else:
        lines = [with_topic_fields(bytes(m.data), m.subject, f, ".") for m in msgs]
    return b"\n".join(lines) + b"\n"
