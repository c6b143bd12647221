"""Durable ingest over real HTTP: batched NDJSON and single events.

Starts a fresh ``headwater serve`` (durable: fsync before every answer), creates a
stream, and drives it with ``wrk`` (C load generator, separate process) when it is
installed, else with Python client processes. Prints events/s, MB/s, request
latency p50/p99, single-event requests/s, p99 at half of peak, and the
decode+validate ceiling measured in-process.

    python benchmarks/ingest.py [--seconds 10] [--connections 8] [--batch 1000]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serverproc import ADMIN_KEY, Server  # noqa: E402

STREAM = {
    "name": "bench",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float", "min": -50, "max": 150},
        {"name": "humidity", "type": "float", "min": 0, "max": 100},
        {"name": "status", "type": "string", "enum": ["ok", "warn", "error"]},
        {"name": "site", "type": "string"},
        {"name": "firmware", "type": "string"},
        {"name": "seq", "type": "int"},
    ],
    "event_time": "ts",
    "key": ["device_id"],
}


def event(i: int) -> dict[str, object]:
    return {
        "device_id": f"device-{i % 10_000:05d}", "ts": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        "temperature": 20.0 + (i % 100) / 10, "humidity": 40.0 + (i % 50) / 5, "status": "ok",
        "site": f"plant-{i % 7}", "firmware": "v2.13.7-rc1", "seq": i,
    }  # fmt: skip


def ndjson(n: int, start: int = 0) -> bytes:
    return b"\n".join(orjson.dumps(event(start + i)) for i in range(n)) + b"\n"


LUA = """
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/x-ndjson"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
"""


def parse_wrk(out: str) -> dict[str, float]:
    def dur(v: str) -> float:
        num, unit = re.match(r"([\d.]+)(\w+)", v).groups()  # type: ignore[union-attr]
        return float(num) * {"us": 1e-3, "ms": 1.0, "s": 1000.0}[unit]

    res = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+\w+)", out)
        res[f"p{pct}_ms"] = dur(m.group(1)) if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["non2xx"] = float(non2xx.group(1)) if non2xx else 0.0
    return res


def wrk(url: str, body_file: Path, seconds: int, connections: int, rate: int | None = None) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    script.write_text(LUA.format(key=ADMIN_KEY, body=body_file))
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def decode_ceiling(batch: int) -> float:
    from headwater.ingest.batch import DecodeLimits, decode_and_validate
    from headwater.model.schema import schema_from_dict

    schema = schema_from_dict(STREAM)
    limits = DecodeLimits(1 << 26, 100_000, 32, 0, 86_400_000, 1000)
    body = ndjson(batch)
    now = int(time.time() * 1000)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 3:
        decode_and_validate(body, "application/x-ndjson", None, schema, limits, now)
        n += batch
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="hw-bench-"))
    srv = Server(tmp / "data", HEADWATER_LOG_LEVEL="warning", HEADWATER_STORE_MAX_LAG_ROWS="1000000000").start()
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
        body = ndjson(args.batch)
        body_file = tmp / "batch.ndjson"
        body_file.write_bytes(body)
        url = f"{srv.url}/v1/streams/bench/events"
        ev_bytes = len(body) / args.batch
        wrk(url, body_file, 2, args.connections)  # warm up
        peak = wrk(url, body_file, args.seconds, args.connections)
        eps = peak["rps"] * args.batch
        print(f"batched NDJSON ({args.batch} events/request, {ev_bytes:.0f} B/event, durable):")
        print(f"  {eps:,.0f} events/s  {eps * ev_bytes / 1e6:,.1f} MB/s  "
              f"p50 {peak['p50_ms']:.1f} ms  p99 {peak['p99_ms']:.1f} ms  non-2xx {peak['non2xx']:.0f}")  # fmt: skip
        half = wrk(url, body_file, args.seconds, max(1, args.connections // 4))
        print(f"  at fewer connections: {half['rps'] * args.batch:,.0f} events/s  p99 {half['p99_ms']:.1f} ms")
        single_file = tmp / "single.ndjson"
        single_file.write_bytes(ndjson(1))
        single = wrk(url, single_file, args.seconds, 32)
        print(f"single-event requests: {single['rps']:,.0f} req/s  p50 {single['p50_ms']:.1f} ms  p99 {single['p99_ms']:.1f} ms")
        ceiling = decode_ceiling(args.batch)
        print(f"decode+validate alone (one core, in-process): {ceiling:,.0f} events/s")
        print(f"ratio to the 100,000 events/s seed target: {eps / 100_000:.1f}x; to the 1M goal: {eps / 1e6:.2f}")
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
