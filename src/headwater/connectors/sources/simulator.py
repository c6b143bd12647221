"""The ``simulator`` source: an IoT fleet emitting readings, with anomalies, disorder, late
and malformed events.

A source like the others: one partition (``fleet``) whose position is the sequence number
of the last event sent, committed with the rows. Its chunks go through the ingest entry,
so everything it sends is validated, deduplicated, quarantined and counted; pushed back,
it pauses. A restart resumes at the committed sequence number, so event ids
(``sim-<epoch>-<seq>``) never repeat and nothing is counted twice. Events are paced in
real time at ``rate`` per second; their event times come from the server's clock.

Config (every key optional): ``devices`` (50), ``rate`` (events/s, 200), ``anomaly_rate``
(0.01), ``disorder_ms`` (2000), ``late_rate`` (0.002), ``malformed_rate`` (0.005), ``seed``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import Chunk, End, Positions
from headwater.errors import BadRequest

CATEGORIES = ("temperature", "humidity", "pressure", "vibration")
BASE = {"temperature": 21.0, "humidity": 45.0, "pressure": 101.3, "vibration": 0.5}
PARTITION = "fleet"
TICK_S = 0.2
MAX_CATCH_UP_S = 1.0  # after a pause, at most this much time's worth of events at once


@dataclass(frozen=True)
class SimulatorConfig:
    devices: int = 50
    rate: float = 200.0  # events per second
    anomaly_rate: float = 0.01  # share of readings far off the device's normal
    disorder_ms: int = 2_000  # event times jitter back by up to this much
    late_rate: float = 0.002  # share of events minutes in the past
    malformed_rate: float = 0.005  # share of events that fail validation
    seed: int | None = None

    @classmethod
    def parse(cls, c: dict[str, Any]) -> SimulatorConfig:
        def number(key: str, default: float, low: float, high: float) -> float:
            v = c.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or not low <= v <= high:
                raise BadRequest(f"config.{key}: a number from {low:g} to {high:g}",
                                 code="bad_source_config")  # fmt: skip
            return float(v)

        seed = c.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise BadRequest("config.seed: an integer", code="bad_source_config")
        return cls(
            devices=int(number("devices", cls.devices, 1, 1_000_000)),
            rate=number("rate", cls.rate, 0.001, 1_000_000),
            anomaly_rate=number("anomaly_rate", cls.anomaly_rate, 0, 1),
            disorder_ms=int(number("disorder_ms", cls.disorder_ms, 0, 86_400_000)),
            late_rate=number("late_rate", cls.late_rate, 0, 1),
            malformed_rate=number("malformed_rate", cls.malformed_rate, 0, 1),
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        return out


class Fleet:
    """The devices: ``batch(n)`` is the next n events, as NDJSON."""

    def __init__(
        self, config: SimulatorConfig, now_ms: Callable[[], int], epoch: int = 0, seq: int = 0
    ) -> None:
        self.config = config
        self.seq = seq
        self._now_ms = now_ms
        self._epoch = epoch
        self._rng = random.Random(None if config.seed is None else config.seed + seq)

    def batch(self, n: int) -> bytes:
        cfg, rng = self.config, self._rng
        now = self._now_ms()
        lines = []
        for _ in range(n):
            self.seq += 1
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
                "event_id": f"sim-{self._epoch}-{self.seq}",
            }
            if rng.random() < cfg.malformed_rate:
                ev[rng.choice(("temperature", "ts", "status"))] = rng.choice(
                    ("n/a", 9999, "2026-13-45")
                )
            lines.append(orjson.dumps(ev))
        return b"\n".join(lines)


class FleetReader:
    """Paces the fleet in real time: each read waits for the next tick, then returns the
    events due since the last one."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet
        self._last = time.monotonic()
        self._carry = 0.0

    def read(self, timeout_s: float) -> Chunk | End | None:
        wait = self._last + TICK_S - time.monotonic()
        if wait > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            return None
        if wait > 0:
            time.sleep(wait)
        now = time.monotonic()
        self._carry += self._fleet.config.rate * min(now - self._last, MAX_CATCH_UP_S)
        self._last = now
        n = int(self._carry)
        if not n:
            return None
        self._carry -= n
        body = self._fleet.batch(n)
        return Chunk(body, "ndjson", PARTITION, str(self._fleet.seq))

    def close(self) -> None:
        pass


class SimulatorSource:
    def __init__(self, rec: SourceRecord, now_ms: Callable[[], int]) -> None:
        self._config = SimulatorConfig.parse(rec.config)
        self._now_ms = now_ms
        self._epoch = rec.created_ms

    def partitions(self, committed: Positions) -> list[str]:
        return [PARTITION]

    def open(self, partition: str, position: str | None) -> FleetReader:
        seq = int(position) if position else 0
        return FleetReader(Fleet(self._config, self._now_ms, self._epoch, seq))
