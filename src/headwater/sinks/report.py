"""What a sink shows: its status document and its Prometheus series."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from headwater.catalog.sqlite import SinkRecord
from headwater.observability import metrics as m
from headwater.sinks.dlq import dlq_table

if TYPE_CHECKING:
    from headwater.sinks.runner import SinkRunner

REPORT_INTERVAL_S = 0.5
BREAKER_STATES = ("closed", "half_open", "open")
HIDDEN_CONFIG = frozenset({"secret", "password", "token"})


def status_of(rec: SinkRecord, runner: SinkRunner | None, failure: str | None) -> dict[str, Any]:
    """``produced = delivered + dead_lettered + pending`` holds in every answer."""
    config = {k: ("***" if k in HIDDEN_CONFIG else v) for k, v in rec.config.items()}
    out: dict[str, Any] = {
        "name": rec.name, "kind": rec.kind, "from": rec.source, "config": config,
        "status": rec.status, "reason": None, "dlq_table": dlq_table(rec.name),
    }  # fmt: skip
    if failure is not None:
        out["status"], out["reason"] = "failed", failure
    if runner is None:
        return out
    totals, lag_s = runner.snapshot()
    d = runner.outbox
    stats = d.stats
    breaker = d.breaker.state(time.monotonic())
    if rec.status == "running" and (breaker != "closed" or stats.waiting > 0):
        out["status"] = "backing_off"
    if runner.error or runner.read_error:
        out["reason"] = runner.error or runner.read_error
    out.update(
        produced=totals.produced, delivered=totals.delivered, dead_lettered=totals.dead,
        pending=totals.pending, breaker=breaker, committed_offset=runner.offset,
        lag_seconds=round(lag_s, 3), blocked=runner.blocked,
        requests=stats.attempts, failed_requests=stats.failed,
        rate_limit_hits=stats.rate_limited, error_rate=round(stats.error_rate, 4),
        avg_latency_ms=round(stats.avg_latency_ms, 2), concurrency=d.slots.limit,
        in_flight=d.slots.used, retrying=stats.waiting,
    )  # fmt: skip
    if (pid := getattr(d, "pid", None)) is not None:  # its outbox is in a sink worker
        out["worker_pid"] = pid
    return out


class Reporter:
    """Turns each running sink's counters into metrics, every ``REPORT_INTERVAL_S``."""

    def __init__(self) -> None:
        self._runners: dict[tuple[str, str], SinkRunner] = {}
        self._seen: dict[tuple[str, str], tuple[int, int, int, int, int]] = {}

    def add(self, tenant: str, name: str, runner: SinkRunner) -> None:
        self._runners[(tenant, name)] = runner

    def remove(self, tenant: str, name: str) -> None:
        self._runners.pop((tenant, name), None)

    async def run(self) -> None:
        while True:
            for key, runner in list(self._runners.items()):
                self.report(key, runner)
            await asyncio.sleep(REPORT_INTERVAL_S)

    def report(self, key: tuple[str, str], runner: SinkRunner) -> None:
        totals, lag_s = runner.snapshot()
        stats = runner.outbox.stats
        now = (totals.delivered, totals.dead, stats.attempts, stats.failed, stats.rate_limited)
        c = runner.committed  # rows finished before this start were counted then
        before = self._seen.get(key, (c.delivered, c.dead, 0, 0, 0))
        delta = [max(0, a - b) for a, b in zip(now, before, strict=True)]
        self._seen[key] = now
        m.SINK_ROWS.labels(*key, "delivered").inc(delta[0])
        m.SINK_ROWS.labels(*key, "dead_lettered").inc(delta[1])
        m.SINK_REQUESTS.labels(*key, "ok").inc(max(0, delta[2] - delta[3]))
        m.SINK_REQUESTS.labels(*key, "failed").inc(delta[3])
        m.SINK_RATE_LIMITED.labels(*key).inc(delta[4])
        m.SINK_PENDING_ROWS.labels(*key).set(totals.pending)
        m.SINK_LAG_SECONDS.labels(*key).set(lag_s)
        m.SINK_CONCURRENCY.labels(*key).set(runner.outbox.slots.limit)
        state = runner.outbox.breaker.state(time.monotonic())
        for name in BREAKER_STATES:
            m.SINK_BREAKER_STATE.labels(*key, name).set(1 if name == state else 0)
        m.SINK_AVG_LATENCY_SECONDS.labels(*key).set(stats.avg_latency_ms / 1000)
