"""NATS source (kind ``nats``): a JetStream stream through a durable pull consumer, or
plain core NATS subjects.

JetStream (``mode: "jetstream"``, the default) is exactly-once. The source's position is
the stream sequence of the last message of a chunk, committed in the same log entry as
its rows; the chunk's ``done`` then acknowledges it to JetStream (the consumer's ack
policy is ``all``: one ack covers the chunk). On every (re)start the durable consumer is
set to follow Headwater's committed sequence: it is kept when its ack floor is that
sequence, else created again to start right after it. So a crash between the commit
and the ack neither loses nor repeats a message, and the consumer's own state never
decides what is read; a message the server delivers again (its ack wait passed) is
skipped by its sequence.

Core NATS (``mode: "core"``) has no replay: what is published while the source is not
subscribed (stopped, paused, reconnecting, or too slow: the client drops what overflows
its buffer) is never seen. At-most-once.

nats-py is asyncio: each reader runs its client on an event loop in a thread of its
own, and ``read`` (called from the runtime's worker threads) waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.mqtt import topic_fields, with_topic_fields
from headwater.connectors.sources.runtime import Chunk, End, Reader
from headwater.errors import BadRequest

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5
INBOX_MAX = 200_000  # core messages held unread; more are dropped (at-most-once)
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


async def connect(cfg: NatsConfig, errors: list[str] | None = None) -> NatsClient:
    """A client that does not reconnect by itself: a lost connection fails the reader, and
    the runtime backs off and opens a new one from the committed position."""

    async def on_error(exc: Exception) -> None:
        if errors is not None:
            errors.append(f"{type(exc).__name__}: {exc}")

    async def on_disconnect() -> None:
        if errors is not None:
            errors.append("disconnected from the NATS server")

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


class NatsSource:
    """The ``PullSource`` of a NATS source: one partition (the stream, or the subscription)."""

    def __init__(self, rec: SourceRecord) -> None:
        self.config = NatsConfig.parse(rec.config)
        self.durable = self.config.durable or f"headwater-{rec.tenant}-{rec.name}-{rec.created_ms}"
        self.name = rec.name

    def partitions(self, committed: object) -> list[str]:
        cfg = self.config
        return [(cfg.stream or "stream") if cfg.mode == "jetstream" else "subscription"]

    def open(self, partition: str, position: str | None) -> Reader:
        if self.config.mode == "core":
            return CoreReader(self.config, partition, int(position or 0), self.name)
        seq = int(position) if position is not None else None
        return JetStreamReader(self.config, self.durable, partition, seq, self.name)

    def forget(self) -> None:
        """Delete the durable consumer of a deleted source."""
        if self.config.mode == "jetstream":
            asyncio.run(self._forget())

    async def _forget(self) -> None:
        nc = await connect(self.config)
        try:
            js = nc.jetstream()
            stream = self.config.stream or await js.find_stream_name_by_subject(
                self.config.subjects[0]
            )
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(stream, self.durable)
        finally:
            await nc.close()


def _lines(cfg: NatsConfig, msgs: list[Msg]) -> bytes:
    f = cfg.fields
    if cfg.fmt == "ndjson":
        lines = [with_topic_fields(bytes(line), m.subject, f, ".")
                 for m in msgs for line in m.data.splitlines() if line.strip()]  # fmt: skip
    else:
        lines = [with_topic_fields(bytes(m.data), m.subject, f, ".") for m in msgs]
    return b"\n".join(lines) + b"\n"


def _filters(c: ConsumerConfig) -> set[str]:
    return set(c.filter_subjects or ([c.filter_subject] if c.filter_subject else []))


def keeps(info: ConsumerInfo, position: int | None, cfg: NatsConfig) -> bool:
    """Whether an existing durable consumer starts right after ``position`` (the committed
    stream sequence; None: nothing committed yet) and filters the configured subjects."""
    if _filters(info.config) != set(cfg.subjects):
        return False
    floor = info.ack_floor.stream_seq if info.ack_floor else 0
    pending = info.num_ack_pending or 0
    if position is None:  # delivered but never committed: start again, unless only new
        return floor == 0 and (pending == 0 or cfg.start == "latest")
    return floor == position and pending == 0


class JetStreamReader:
    def __init__(
        self, cfg: NatsConfig, durable: str, partition: str, position: int | None, source: str
    ) -> None:
        self._cfg, self._durable, self._partition = cfg, durable, partition
        self._last = position or 0  # the highest stream sequence handed out
        self._errors: list[str] = []
        self._loop = LoopThread(f"nats-source:{source}")
        try:
            self._loop.call(self._open(position), CONNECT_TIMEOUT_S * 3)
        except BaseException:
            self._loop.close()
            raise

    async def _open(self, position: int | None) -> None:
        cfg = self._cfg
        self._nc = nc = await connect(cfg, self._errors)
        try:
            js = nc.jetstream()
            stream = cfg.stream or await js.find_stream_name_by_subject(cfg.subjects[0])
            try:
                info: ConsumerInfo | None = await js.consumer_info(stream, self._durable)
            except nats.js.errors.NotFoundError:
                info = None
            if info is not None and not keeps(info, position, cfg):
                await js.delete_consumer(stream, self._durable)
                info = None
            if info is None:
                await js.add_consumer(stream, config=self._consumer(position))
            self._sub = await js.pull_subscribe_bind(durable=self._durable, stream=stream)
        except BaseException:
            await nc.close()
            raise

    def _consumer(self, position: int | None) -> ConsumerConfig:
        cfg = self._cfg
        if position is not None:
            policy, start = DeliverPolicy.BY_START_SEQUENCE, position + 1
        else:
            policy, start = (
                (DeliverPolicy.ALL if cfg.start == "earliest" else DeliverPolicy.NEW),
                None,
            )
        one = len(cfg.subjects) == 1
        return ConsumerConfig(
            name=self._durable, durable_name=self._durable, deliver_policy=policy,
            opt_start_seq=start, ack_policy=AckPolicy.ALL, ack_wait=cfg.ack_wait_s,
            max_ack_pending=max(10_000, 4 * cfg.batch_max),
            filter_subject=cfg.subjects[0] if one else None,
            filter_subjects=None if one else list(cfg.subjects),
        )  # fmt: skip

    def read(self, timeout_s: float) -> Chunk | End | None:
        msgs = self._loop.call(self._fetch(timeout_s), timeout_s)
        fresh = [m for m in msgs if m.metadata.sequence.stream > self._last]
        if not fresh:
            return None
        last = fresh[-1]
        self._last = last.metadata.sequence.stream
        return Chunk(_lines(self._cfg, fresh), "ndjson", self._partition, str(self._last),
                     done=lambda: self._ack(last), lag=last.metadata.num_pending)  # fmt: skip

    async def _fetch(self, timeout_s: float) -> list[Msg]:
        if self._nc.is_closed:
            raise ConnectionError(self._errors[-1] if self._errors else "connection closed")
        try:
            return await self._sub.fetch(self._cfg.batch_max, timeout=max(0.05, timeout_s))
        except nats.errors.TimeoutError:
            return []

    def _ack(self, msg: Msg) -> None:
        """The chunk is durable: ack its last message, and with it every one before."""
        self._loop.call(msg.ack(), CONNECT_TIMEOUT_S)

    def close(self) -> None:
        try:
            self._loop.call(self._close(), CONNECT_TIMEOUT_S)
        finally:
            self._loop.close()

    async def _close(self) -> None:
        if not self._nc.is_closed:
            try:
                await self._nc.flush(CONNECT_TIMEOUT_S)  # the acks already sent
            finally:
                await self._nc.close()


class CoreReader:
    """Core NATS subscriptions: messages arrive into a buffer the reads take from."""

    def __init__(self, cfg: NatsConfig, partition: str, count: int, source: str) -> None:
        self._cfg, self._partition, self._count = cfg, partition, count
        self._inbox: list[Msg] = []
        self._errors: list[str] = []
        self.dropped = 0  # messages that came while the buffer was full
        self._loop = LoopThread(f"nats-source:{source}")
        try:
            self._arrived = self._loop.call(self._open(), CONNECT_TIMEOUT_S * 2)
        except BaseException:
            self._loop.close()
            raise

    async def _open(self) -> asyncio.Event:
        self._nc = await connect(self._cfg, self._errors)
        arrived = asyncio.Event()

        async def on_message(msg: Msg) -> None:
            if len(self._inbox) >= max(INBOX_MAX, 4 * self._cfg.batch_max):
                self.dropped += 1
                return
            self._inbox.append(msg)
            arrived.set()

        for subject in self._cfg.subjects:
            await self._nc.subscribe(subject, queue=self._cfg.queue or "", cb=on_message)
        await self._nc.flush(CONNECT_TIMEOUT_S)  # subscribed once the server answers
        return arrived

    def read(self, timeout_s: float) -> Chunk | End | None:
        msgs = self._loop.call(self._take(timeout_s), timeout_s)
        if not msgs:
            return None
        self._count += len(msgs)
        return Chunk(_lines(self._cfg, msgs), "ndjson", self._partition, str(self._count))

    async def _take(self, timeout_s: float) -> list[Msg]:
        if self._nc.is_closed:
            raise ConnectionError(self._errors[-1] if self._errors else "connection closed")
        if not self._inbox:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout_s)
            except TimeoutError:
                return []
        n = self._cfg.batch_max
        msgs, self._inbox[:] = self._inbox[:n], self._inbox[n:]
        return msgs

    def close(self) -> None:
        try:
            if not self._nc.is_closed:
                self._loop.call(self._nc.close(), CONNECT_TIMEOUT_S)
        finally:
            self._loop.close()
