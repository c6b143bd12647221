"""A simulated IoT fleet: devices emitting readings, with anomalies, disorder, late and bad events.

The simulator is a source like the others: it hands NDJSON chunks to the ingest entry
(``Acceptor.accept``) with its origin, so everything it sends is validated,
deduplicated, quarantined, counted and durable before the next chunk. Pushed back (the
store behind, the tenant's quotas) it waits and offers the same chunk again: it pauses,
it never drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import structlog

from headwater.errors import HeadwaterError, Overloaded, RateLimited
from headwater.ingest.accept import Acceptor, Origin
from headwater.ingest.streams import StreamState

log = structlog.get_logger("headwater.sources")

CATEGORIES = ("temperature", "humidity", "pressure", "vibration")
BASE = {"temperature": 21.0, "humidity": 45.0, "pressure": 101.3, "vibration": 0.5}

SOURCE, PARTITION = "simulator", "fleet"
RETRY_S = 1.0


@dataclass
class SimulatorConfig:
    devices: int = 50
    rate: float = 200.0  # events per second
    tick_s: float = 0.2
    anomaly_rate: float = 0.01  # share of readings far off the device's normal
    disorder_ms: int = 2_000  # event times jitter back by up to this much
    late_rate: float = 0.002  # share of events minutes in the past
    malformed_rate: float = 0.005  # share of events that fail validation
    seed: int | None = None


class Simulator:
    def __init__(
        self, config: SimulatorConfig, acceptor: Acceptor, stream: StreamState,
        now_ms: Callable[[], int],
    ) -> None:  # fmt: skip
        self.config = config
        self._acceptor, self._stream = acceptor, stream
        self._now_ms = now_ms
        self._rng = random.Random(config.seed)
        self._seq = 0
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.batches = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> bool:
        if self.running:
            return False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="simulator")
        return True

    async def stop(self) -> bool:
        if not self.running:
            return False
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        return True

    def batch(self, n: int) -> bytes:
        """n events as NDJSON."""
        cfg, rng = self.config, self._rng
        now = self._now_ms()
        lines = []
        for _ in range(n):
            self._seq += 1
            dev = rng.randrange(cfg.devices)
            cat = CATEGORIES[dev % len(CATEGORIES)]
            ts = now - rng.randrange(cfg.disorder_ms + 1)
            if rng.random() < cfg.late_rate:
                ts -= rng.randrange(120_000, 600_000)
            value = BASE[cat] * (1 + rng.gauss(0, 0.03))
            if rng.random() < cfg.anomaly_rate:
                value *= rng.choice((3.0, -1.0, 5.0))
            temp = 20 + (dev % 10) + rng.gauss(0, 0.5)
            ev: dict[str, object] = {
                "device_id": f"dev-{dev:04d}",
                "category": cat,
                "ts": datetime.fromtimestamp(ts / 1000, UTC).isoformat(timespec="milliseconds"),
                "value": round(value, 4),
                "temperature": round(temp, 3),
                "status": "warn" if abs(value) > 2 * BASE[cat] else "ok",
                "event_id": f"sim-{self._seq}",
            }
            if rng.random() < cfg.malformed_rate:
                ev[rng.choice(("temperature", "ts", "status"))] = rng.choice(
                    ("n/a", 9999, "2026-13-45")
                )
            lines.append(orjson.dumps(ev))
        return b"\n".join(lines)

    async def _run(self) -> None:
        cfg = self.config
        carry = 0.0
        while True:
            carry += cfg.rate * cfg.tick_s
            n = int(carry)
            carry -= n
            if n:
                await self._deliver(self.batch(n))
                self.sent += n
                self.batches += 1
            await asyncio.sleep(cfg.tick_s)

    async def _deliver(self, body: bytes) -> None:
        """Hand one chunk to the ingest entry; returns once it is durable."""
        origin = Origin(SOURCE, PARTITION, str(self._seq))
        while True:
            try:
                await self._acceptor.accept(self._stream, body, "ndjson", origin, self._seq)
                return
            except (Overloaded, RateLimited) as exc:  # pushed back: wait, then offer it again
                await asyncio.sleep(exc.retry_after_s)
            except HeadwaterError as exc:  # e.g. the disk is full: say so, try again later
                log.warning("simulator_backing_off", code=exc.code, error=exc.message)
                await asyncio.sleep(RETRY_S)
