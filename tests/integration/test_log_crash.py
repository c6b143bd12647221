"""G1 for the embedded log: an acknowledged append survives ``kill -9`` at any instant.

A child process appends from several concurrent tasks and prints every acknowledged
entry. The test kills it at random moments (sometimes leaving a torn entry behind, as a
power cut would) and restarts it on the same directory; at the end every acknowledged
entry must be there, intact and in order, and the topic's offsets must have no gaps or
overlaps.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headwater.log.file import FileLog

TOPIC = "default.readings"

CHILD = """
import asyncio, sys
from pathlib import Path
import pyarrow as pa
from headwater.log.file import FileLog

directory, run, topic = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

def batch(key: str, n: int) -> pa.RecordBatch:
    seed = sum(key.encode())
    return pa.record_batch({"key": [key] * n, "v": [seed * 1000 + k for k in range(n)]})

async def appender(log: FileLog, task: int) -> None:
    for seq in range(10**9):
        key = f"{run}-{task}-{seq}"
        n = 1 + (seq * 37 + task) % 300
        result = await log.append(topic, batch(key, n), meta=key.encode())
        print("ack", result.offset, result.count, key, flush=True)

async def main() -> None:
    log = FileLog(directory, segment_bytes=64 * 1024)
    await asyncio.gather(*(appender(log, t) for t in range(8)))

asyncio.run(main())
"""


def run_and_kill(directory: Path, run: int, rng: random.Random) -> list[tuple[int, int, str]]:
    """Start a child appender, SIGKILL it at a random moment, return what it acknowledged."""
    with open(directory / f"child-{run}.err", "w+") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory / "log"), str(run), TOPIC],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert child.stdout is not None
        first = child.stdout.readline()  # it is up and appending (or logging a recovery)
        time.sleep(rng.uniform(0.0, 0.4) if first else 0)
        os.kill(child.pid, signal.SIGKILL)
        # Read on from the same buffered stream: readline may have read ahead.
        rest = child.stdout.read()
        child.stdout.close()
        child.wait()
        err.seek(0)
        assert first, f"the child appender failed to start: {err.read()}"
    acked = []
    for line in (first + rest).splitlines(keepends=True):
        # A line cut by the kill was never fully acknowledged; other lines are logs.
        if line.startswith("ack ") and line.endswith("\n"):
            _, offset, count, key = line.split()
            acked.append((int(offset), int(count), key))
    return acked


def tear_tail(directory: Path, rng: random.Random) -> None:
    """Leave a half-written entry behind, as a power cut during a write would."""
    last = max((directory / "log" / TOPIC).glob("*.log"))
    with open(last, "ab") as fh:
        fh.write(b"HWL1" + rng.randbytes(rng.randrange(0, 300)))


@pytest.mark.slow
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acked: list[tuple[int, int, str]] = []
    for run in range(8):
        acked += run_and_kill(tmp_path, run, rng)
        if rng.random() < 0.5:
            tear_tail(tmp_path, rng)
    assert len(acked) > 100, f"too few appends to prove anything (seed {seed})"

    log = FileLog(tmp_path / "log")
    try:
        entries = log.read(TOPIC, 0, max_rows=10**12)
        # The whole topic: contiguous offsets from 0, no gaps, no overlaps.
        assert entries[0].offset == 0
        assert all(a.end == b.offset for a, b in itertools.pairwise(entries))
        assert entries[-1].end == log.end_offset(TOPIC)
        by_offset = {e.offset: e for e in entries}
        for offset, count, key in acked:
            entry = by_offset.get(offset)
            assert entry is not None, f"acknowledged entry {key} at {offset} is lost (seed {seed})"
            assert entry.meta == key.encode() and entry.batch.num_rows == count
            seed_v = sum(key.encode()) * 1000
            assert entry.batch.column("v").to_pylist() == [seed_v + k for k in range(count)]
            assert set(entry.batch.column("key").to_pylist()) == {key}
        # Each appender task waited for one ack before the next append: its offsets rise.
        last: dict[str, int] = {}
        for offset, _, key in acked:
            task = key.rsplit("-", 1)[0]
            assert offset > last.get(task, -1), f"{key} acknowledged out of order (seed {seed})"
            last[task] = offset
    finally:
        log.close_blocking()
