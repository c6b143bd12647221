"""Reading a JetStream stream through a durable pull consumer that follows Headwater.

The consumer's ack policy is ``all``: acking a chunk's last message (in the chunk's
``done``, once it is durable) acks the chunk. At open the consumer is kept when its ack
floor is the committed sequence and nothing is pending, else created again to start
right after it (``keeps``), so the log's position, not the consumer, decides what is read.

Pull requests are sent by hand to ``$JS.API.CONSUMER.MSG.NEXT`` and answered into a
callback subscription (nats-py's ``fetch`` waits on each message and reads ~3x slower).
Each request completes before the next is sent, so no message is ever delivered to a
request nobody waits for: a ``no_wait`` request takes what the stream holds (up to the
batch), and when it holds nothing a request for one message waits up to the read's
timeout.
"""

from __future__ import annotations

import asyncio
import threading

import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy

from headwater.connectors.sources.nats_client import (
    CONNECT_TIMEOUT_S,
    LoopThread,
    NatsConfig,
    connect,
    lines,
)
from headwater.connectors.sources.ports import Chunk, End

ANSWER_SLACK_S = 5.0  # beyond a request's expiry, before the server is deemed gone
DONE_STATUSES = ("404", "408")  # no messages; the request expired


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


class Puller:
    """Pull requests of one consumer, answered into one subscription (on the client's loop)."""

    def __init__(self, nc: NatsClient, stream: str, durable: str) -> None:
        self._nc = nc
        self._api = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._prefix = nc.new_inbox()
        self._reply = ""
        self._requests = 0
        self._box: list[Msg] = []
        self._want = 0
        self._status: str | None = None
        self._answered = asyncio.Event()

    async def start(self) -> None:
        await self._nc.subscribe(self._prefix + ".*", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        """Messages show their stream subject; a status shows the request it ends."""
        headers = msg.headers or {}
        status = headers.get("Status")
        if status:
            if msg.subject != self._reply:
                return  # no request is left open (see the module): cannot happen
            self._status = f"{status} {headers.get('Description', '')}".strip()
            self._answered.set()
            return
        self._box.append(msg)
        if len(self._box) >= self._want:
            self._answered.set()

    def lost(self) -> None:
        """The connection is gone: a request waiting for its answer fails now."""
        self._status = "connection lost"
        self._answered.set()

    async def pull(self, batch: int, wait_s: float | None) -> list[Msg]:
        """Up to ``batch`` messages: those the stream holds now (``wait_s`` None), or the
        first to come within ``wait_s``."""
        self._requests += 1
        self._reply = f"{self._prefix}.{self._requests}"
        self._box, self._want, self._status = [], batch, None
        self._answered.clear()
        req: dict[str, object] = {"batch": batch}
        if wait_s is None:
            req["no_wait"] = True
        else:
            req["expires"] = int(wait_s * 1e9)
        await self._nc.publish(self._api, orjson.dumps(req), reply=self._reply)
        try:
            await asyncio.wait_for(self._answered.wait(), (wait_s or 0) + ANSWER_SLACK_S)
        except TimeoutError as exc:
            raise ConnectionError("JetStream did not answer a pull request") from exc
        if self._status is not None and self._status[:3] not in DONE_STATUSES:
            raise ConnectionError(f"pull request to JetStream failed: {self._status}")
        return self._box


class JetStreamReader:
    def __init__(
        self, cfg: NatsConfig, durable: str, partition: str, position: int | None, source: str
    ) -> None:
        self._cfg, self._durable, self._partition = cfg, durable, partition
        self._last = position or 0  # the highest stream sequence handed out
        self._errors: list[str] = []
        # a read still running in its thread when the source is paused finishes first
        self._busy = threading.Lock()
        self._loop = LoopThread(f"nats-source:{source}")
        try:
            self._loop.call(self._open(position), CONNECT_TIMEOUT_S * 3)
        except BaseException:
            self._loop.close()
            raise

    async def _open(self, position: int | None) -> None:
        cfg = self._cfg
        self._puller: Puller | None = None
        self._nc = nc = await connect(cfg, self._errors, self._lost)
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
            puller = Puller(nc, stream, self._durable)
            await puller.start()
            self._puller = puller
        except BaseException:
            await nc.close()
            raise

    def _lost(self) -> None:
        if self._puller is not None:
            self._puller.lost()

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
        with self._busy:
            msgs = self._loop.call(self._fetch(timeout_s), timeout_s + ANSWER_SLACK_S)
        fresh = [m for m in msgs if m.metadata.sequence.stream > self._last]
        if not fresh:
            return None
        last = fresh[-1]
        self._last = last.metadata.sequence.stream
        return Chunk(lines(self._cfg, fresh), "ndjson", self._partition, str(self._last),
                     done=lambda: self._ack(last), lag=last.metadata.num_pending)  # fmt: skip

    async def _fetch(self, timeout_s: float) -> list[Msg]:
        if self._nc.is_closed:
            raise ConnectionError(self._errors[-1] if self._errors else "connection closed")
        batch, puller = self._cfg.batch_max, self._puller
        assert puller is not None
        msgs = await puller.pull(batch, None)
        if not msgs:  # nothing now: wait for one, then take what came with it
            msgs = await puller.pull(1, max(0.05, timeout_s))
            if msgs and batch > 1:
                msgs += await puller.pull(batch - 1, None)
        return msgs

    def _ack(self, msg: Msg) -> None:
        """The chunk is durable: ack its last message, and with it every one before."""
        self._loop.call(msg.ack(), CONNECT_TIMEOUT_S)

    def close(self) -> None:
        with self._busy:
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
