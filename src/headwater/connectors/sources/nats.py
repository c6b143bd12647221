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
skipped by its sequence. The reading itself is in ``jetstream.py``.

Core NATS (``mode: "core"``) has no replay: what is published while the source is not
subscribed (stopped, paused, reconnecting, or too slow: the client drops what overflows
its buffer) is never seen. At-most-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import nats.js.errors
from nats.aio.msg import Msg

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.jetstream import JetStreamReader
from headwater.connectors.sources.nats_client import (
    CONNECT_TIMEOUT_S,
    LoopThread,
    NatsConfig,
    connect,
    lines,
)
from headwater.connectors.sources.ports import Chunk, End, Reader

__all__ = ["NatsConfig", "NatsSource"]
INBOX_MAX = 200_000  # core messages held unread; more are dropped (at-most-once)


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


class CoreReader:
    """Core NATS subscriptions: messages arrive into a buffer the reads take from."""

    def __init__(self, cfg: NatsConfig, partition: str, count: int, source: str) -> None:
        self._cfg, self._partition, self._count = cfg, partition, count
        self._inbox: list[Msg] = []
        self._errors: list[str] = []
        self.dropped = 0  # messages that came while the buffer was full
        self._busy = threading.Lock()  # a read in flight at a pause finishes first
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
        with self._busy:
            msgs = self._loop.call(self._take(timeout_s), timeout_s)
        if not msgs:
            return None
        self._count += len(msgs)
        return Chunk(lines(self._cfg, msgs), "ndjson", self._partition, str(self._count))

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
        with self._busy:
            try:
                if not self._nc.is_closed:
                    self._loop.call(self._nc.close(), CONNECT_TIMEOUT_S)
            finally:
                self._loop.close()
