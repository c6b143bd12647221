"""The event-id index at scale: per-batch cost, start time and memory after N ids.

Feeds N distinct ids, in 1,000-id batches as ingest does (hash check, reserve, log
append, settle), into a stream's index backed by a real ``FileLog`` (fsync off: this
measures the index, not the disk) and its background spiller. At checkpoints it prints
the CPU cost of one batch of new ids (and of one batch of already-seen ids), the hot
ids held in memory, the on-disk runs, and — in a fresh process, as a restart would —
the time to open the index and the memory the process holds afterwards.

    python benchmarks/ids.py [--ids 10000000] [--filter-mb 32] [--spill 262144]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from headwater.ingest.dedup import IdIndex
from headwater.ingest.idspill import spill
from headwater.log.file import FileLog

TOPIC = "default.bench"
BATCH = 1000

START = """
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from headwater.ingest.dedup import IdIndex
from headwater.ingest.idspill import replay_tail
from headwater.log.file import FileLog
imported = time.perf_counter()
log = FileLog(Path(sys.argv[1]), fsync=False)
opened_log = time.perf_counter()
index = IdIndex.on_disk(Path(sys.argv[2]), int(sys.argv[3]), spill_ids=int(sys.argv[4]),
                        hot_max_ids=10**9)
replay_tail(index, "default.bench", log)
done = time.perf_counter()
rss = int(open("/proc/self/statm").read().split()[1]) * 4096
print(json.dumps({"index_open_s": done - opened_log, "log_open_s": opened_log - imported,
                  "hot_ids": index.hot_ids(), "rss_mb": rss / 2**20}))
"""


def hashes_for(batch: int) -> np.ndarray:
    """1,000 distinct, well-spread id hashes for batch number ``batch``."""
    x = np.arange(batch * BATCH, (batch + 1) * BATCH, dtype=np.uint64) + np.uint64(1)
    return x * np.uint64(0x9E3779B97F4A7C15)


def batch_cost(index: IdIndex, hashes: np.ndarray, reps: int = 200) -> float:
    """CPU microseconds of the ingest-side check of one 1,000-id batch."""
    t0 = time.thread_time()
    for _ in range(reps):
        index.first_unseen(hashes)
    return (time.thread_time() - t0) / reps * 1e6


def restart(log_dir: Path, ids_dir: Path, filter_bytes: int, spill_ids: int) -> dict[str, float]:
    args = [str(log_dir), str(ids_dir), str(filter_bytes), str(spill_ids)]
    out = subprocess.run([sys.executable, "-c", START, *args], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ids", type=int, default=10_000_000)
    ap.add_argument("--filter-mb", type=int, default=32)
    ap.add_argument("--spill", type=int, default=262_144)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hw-ids-"))
    filter_bytes = args.filter_mb * 2**20
    log = FileLog(tmp / "log", fsync=False)
    index = IdIndex.on_disk(tmp / "ids", filter_bytes, spill_ids=args.spill, hot_max_ids=10**9)
    checkpoints = sorted({n for n in (10**6, 10**7, 10**8, args.ids) if n <= args.ids})
    print(f"filter {args.filter_mb} MiB, spill every {args.spill:,} ids; data in {tmp}")
    print("ids | new batch us | seen batch us | hot ids | runs | open s | rss MB (fresh process)")
    t0 = time.perf_counter()
    held, kept = [], []
    for b in range(args.ids // BATCH):
        hashes = hashes_for(b)
        keep = index.first_unseen(hashes)
        held.append(index.reserve(hashes[keep]))
        kept.append(hashes[keep])
        n = (b + 1) * BATCH
        if len(held) == 20 or n in checkpoints:  # one log entry per 20 batches: feeds faster
            done = log.append_blocking(TOPIC, pa.record_batch({"_id_hash": np.concatenate(kept)}))
            for reservation in held:
                reservation.settle(done.offset + done.count)
            held, kept = [], []
        if b % 256 == 0:
            while spill(index, TOPIC, log):
                pass
        if n in checkpoints:
            while spill(index, TOPIC, log):
                pass
            new = batch_cost(index, hashes_for(args.ids // BATCH + 10 + b))
            seen = batch_cost(index, hashes_for(b // 2))
            runs = index.runs.run_count() if index.runs is not None else 0
            log.close_blocking()  # one owner at a time: the "restart" opens it
            start = restart(tmp / "log", tmp / "ids", filter_bytes, args.spill)
            log = FileLog(tmp / "log", fsync=False)
            print(f"{n:>11,} | {new:8.0f} | {seen:8.0f} | {index.hot_ids():>9,} | {runs:>3} | "
                  f"{start['index_open_s']:6.2f} | {start['rss_mb']:6.0f}   "
                  f"(fed in {time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    log.close_blocking()


if __name__ == "__main__":
    main()
