"""Kafka delivery of one request's rows: one message per row, with its idempotency key.

Each row is a JSON message on ``topic``, its key built from ``key_fields`` (one field:
its value as text; several: a JSON array of their values; none: no key) and its
idempotency key in the ``Idempotency-Key`` header, the same on every retry, so a consumer
can drop the duplicates a crash may replay. ``KafkaDelivery.deliver`` returns when every
row is acknowledged by the broker or dead: a row the broker refuses for itself (too
large, invalid) goes to the dead-letter table alone; a broker that is down or times out
is retried with the sink's backoff, breaker and attempt limits, resending only the rows
not yet acknowledged. The producer is not idempotent (librdkafka's ``enable.idempotence``
is off): delivery is at-least-once, the header tells the copies apart.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from headwater.errors import BadRequest
from headwater.sinks.config import KafkaSinkConfig
from headwater.sinks.http import Outcome, Retryable, Slots, Stats
from headwater.sinks.policy import Aimd, Breaker
from headwater.sinks.rows import Request, Row

POLL_S = 0.05
CLOSE_FLUSH_S = 1.0
# the broker refuses the message itself: sending it again cannot help
POISON = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_MSG_SIZE,
                    KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG, KafkaError._INVALID_ARG})  # fmt: skip


def key_of(row: bytes, fields: list[str]) -> bytes | None:
    """The message key of a row (JSON object) by ``fields``.

    >>> key_of(b'{"device_id": "d7", "n": 1}', ["device_id"])
    b'd7'
    >>> key_of(b'{"a": 1, "b": null}', ["a", "b"])
    b'[1,null]'
    """
    if not fields:
        return None
    obj = orjson.loads(row)
    if len(fields) == 1:
        v = obj.get(fields[0])
        return v.encode() if isinstance(v, str) else orjson.dumps(v)
    return orjson.dumps([obj.get(f) for f in fields])


def producer_conf(config: KafkaSinkConfig) -> dict[str, Any]:
    return {
        "bootstrap.servers": config.bootstrap, "enable.idempotence": False,
        "linger.ms": 5, "batch.size": 1_000_000, "compression.type": "lz4",
        "message.timeout.ms": int(config.timeout_s * 1000), "acks": "all",
        **config.options,
    }  # fmt: skip


def check_client(config: KafkaSinkConfig) -> None:
    """Refuse settings the client does not take with a 400, before the sink is stored."""
    try:
        Producer(producer_conf(config)).flush(0)
    except KafkaException as exc:
        raise BadRequest(
            f"sink config options: the Kafka client refuses it: {exc.args[0].str()}",
            code="invalid_sink_config",
            field="options",
        ) from exc


class _Round:
    """The rows of one attempt, counted down by delivery reports (in the poll thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop, self.left = loop, n
        self._lock = threading.Lock()  # reports come from the poll thread and the loop
        self.done = loop.create_future()
        self.errors: dict[int, KafkaError] = {}

    def report(self, i: int, err: KafkaError | None) -> None:
        with self._lock:
            if err is not None:
                self.errors[i] = err
            self.left -= 1
            last = self.left == 0
        if last:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class KafkaDelivery:
    def __init__(self, config: KafkaSinkConfig, breaker: Breaker) -> None:
        self.config = config
        self.breaker = breaker
        self.stats = Stats()
        self.slots = Slots(Aimd(config.max_concurrency))
        self._producer = Producer(producer_conf(config))
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="headwater-kafka-sink", daemon=True)
        self._poller.start()
        self._jitter = wait_random_exponential(
            multiplier=config.backoff_base_s, max=config.backoff_max_s
        )

    def _poll(self) -> None:
        """Serve delivery reports until closed."""
        while not self._stop.is_set():
            self._producer.poll(POLL_S)

    async def close(self) -> None:
        # rows not acknowledged yet are not committed either: sent again after a restart
        await asyncio.to_thread(self._producer.flush, CLOSE_FLUSH_S)
        self._stop.set()
        await asyncio.to_thread(self._poller.join)

    async def send(self, body: bytes, key: str) -> Outcome:
        """Deliver one body of rows (a JSON object, or an array) under one key: a replay."""
        value = orjson.loads(body)
        objs = value if isinstance(value, list) else [value]
        rows = [Row(0, key, orjson.dumps(o)) for o in objs]
        out = await self.deliver(Request(rows, body, key))
        if out.dead_rows:  # a replayed row is delivered or dead, never split
            out.ok = False
        return out

    async def deliver(self, req: Request) -> Outcome:
        cfg = self.config
        out = Outcome(ok=False, attempts=0)
        todo = list(range(len(req.rows)))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.max_attempts) | stop_after_delay(cfg.max_retry_s),
            wait=self._wait,
            retry=retry_if_exception_type(Retryable),
            before_sleep=lambda _s: self._sleeping(),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    out.attempts += 1
                    if attempt.retry_state.attempt_number > 1:
                        self.stats.waiting -= 1
                    await self._attempt(req.rows, todo, out)
            out.ok = True
        except Retryable as exc:
            out.status, out.body, out.error = exc.status, exc.body, exc.error
        return out

    def _wait(self, state: RetryCallState) -> float:
        return float(self._jitter(state))

    def _sleeping(self) -> None:
        self.stats.waiting += 1

    async def _attempt(self, rows: Sequence[Row], todo: list[int], out: Outcome) -> None:
        """Produce the rows ``todo``, leaving in it those to send again (``Retryable``)."""
        await self.slots.acquire()
        try:
            while not self.breaker.admit(now := time.monotonic()):
                await asyncio.sleep(self.breaker.wait_s(now))
            t0 = time.monotonic()
            self.stats.attempts += 1
            try:
                errors = await self._produce(rows, todo)
            finally:
                self.stats.latency_s += time.monotonic() - t0
        finally:
            await self.slots.release()
        poison = {i for i, e in errors.items() if e.code() in POISON}
        out.dead_rows += sorted(poison)
        todo[:] = [i for i in todo if i in errors and i not in poison]
        if poison:
            first = errors[min(poison)]
            out.body, out.error = "", f"Kafka: {first.name()}: {first.str()}"
        if not todo:
            self.breaker.on_success()
            self.slots.aimd.on_success()
            return
        self._failed(out)
        self.breaker.on_failure(time.monotonic())
        self.slots.aimd.on_push_back()
        err = errors[todo[0]]
        raise Retryable(None, "", f"Kafka: {err.name()}: {err.str()}", None)

    async def _produce(self, rows: Sequence[Row], todo: list[int]) -> dict[int, KafkaError]:
        topic, fields = self.config.topic, self.config.key_fields
        rnd = _Round(asyncio.get_running_loop(), len(todo))
        for i in todo:
            row = rows[i]

            def report(err: KafkaError | None, _m: Message, i: int = i) -> None:
                rnd.report(i, err)

            while True:
                try:
                    self._producer.produce(
                        topic, row.json, key_of(row.json, fields), on_delivery=report,
                        headers=[("Idempotency-Key", row.key.encode())],
                    )  # fmt: skip
                    break
                except BufferError:  # the client's queue is full: let it drain
                    await asyncio.sleep(POLL_S)
                except Exception as exc:  # e.g. a key field that is no JSON: the row is bad
                    rnd.report(i, KafkaError(KafkaError._INVALID_ARG, str(exc)))
                    break
        if todo:
            await rnd.done
        return rnd.errors

    def _failed(self, out: Outcome) -> None:
        self.stats.failed += 1
        now = int(time.time() * 1000)
        if out.first_failure_ms is None:
            out.first_failure_ms = now
        out.last_failure_ms = now
