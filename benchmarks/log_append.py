"""Append throughput and latency of the embedded log (FileLog), group-fsynced.

Runs concurrent asyncio appenders against a fresh FileLog for a few seconds per
scenario and prints entries/s, MB/s and append latency percentiles.

    python benchmarks/log_append.py                 # the default scenarios
    python benchmarks/log_append.py --seconds 10 --dir /var/tmp/hw-bench

Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from headwater.log.file import FileLog


@dataclass(frozen=True)
class Scenario:
    name: str
    rows: int  # rows per entry
    appenders: int  # concurrent asyncio tasks
    fsync: bool = True


SCENARIOS = [
    Scenario("200 KB entries, 32 appenders", rows=5_400, appenders=32),
    Scenario("200 KB entries, 8 appenders", rows=5_400, appenders=8),
    Scenario("1-row entries, 100 appenders", rows=1, appenders=100),
    Scenario("100-row entries, 100 appenders", rows=100, appenders=100),
    Scenario("200 KB entries, 32 appenders, fsync off", rows=5_400, appenders=32, fsync=False),
]


def readings(n: int) -> pa.RecordBatch:
    """A batch shaped like sensor readings: ~40 bytes a row."""
    rng = np.random.default_rng(0)
    return pa.record_batch(
        {
            "device_id": pa.array([f"dev-{i % 5000:05d}" for i in range(n)]),
            "ts": pa.array(1_700_000_000_000 + np.arange(n), pa.timestamp("ms", tz="UTC")),
            "temperature": pa.array(rng.normal(20, 5, n)),
            "seq": pa.array(np.arange(n, dtype=np.int64)),
        }
    )


async def run(scenario: Scenario, directory: Path, seconds: float) -> dict[str, float]:
    log = FileLog(directory, fsync=scenario.fsync)
    batch = readings(scenario.rows)
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def appender(task: int) -> None:
        topic = f"bench.t{task % 4}"  # a few topics, as a real server has
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await log.append(topic, batch)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(appender(t) for t in range(scenario.appenders)))
    elapsed = time.perf_counter() - started
    size = log.size_bytes()
    read_s = read_everything(log, [f"bench.t{t}" for t in range(4)])
    await log.close()
    lat = np.array(latencies) * 1000
    return {
        "entries/s": len(latencies) / elapsed,
        "rows/s": len(latencies) * scenario.rows / elapsed,
        "MB/s": size / elapsed / 1e6,
        "p50 ms": float(np.percentile(lat, 50)),
        "p99 ms": float(np.percentile(lat, 99)),
        "entry KB": size / len(latencies) / 1e3,
        "read MB/s": size / read_s / 1e6,
    }


def read_everything(log: FileLog, topics: list[str]) -> float:
    """Seconds to read every topic from the start, as a catching-up consumer does."""
    started = time.perf_counter()
    for topic in topics:
        offset = 0
        while entries := log.read(topic, offset, max_rows=100_000):
            offset = entries[-1].end
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each scenario")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    print(
        f"{'scenario':44} {'entries/s':>10} {'rows/s':>11} {'MB/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'KB/entry':>8} {'read MB/s':>9}"
    )
    for scenario in SCENARIOS:
        directory = Path(tempfile.mkdtemp(prefix="hw-log-bench-", dir=args.dir))
        try:
            r = asyncio.run(run(scenario, directory, args.seconds))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        print(
            f"{scenario.name:44} {r['entries/s']:>10,.0f} {r['rows/s']:>11,.0f} {r['MB/s']:>8.1f} "
            f"{r['p50 ms']:>7.2f} {r['p99 ms']:>7.2f} {r['entry KB']:>8.1f} {r['read MB/s']:>9,.0f}"
        )


if __name__ == "__main__":
    main()
