"""Durable ingest over real HTTP: batched NDJSON and single events.

Starts a fresh ``headwater serve`` (durable: fsync before every answer), creates a
stream, and drives it with ``wrk`` (C load generator, separate process). Prints:

- batched events/s, MB/s and request latency p50/p99 at peak (closed loop);
- p99 at about half of that rate: each connection waits between requests (wrk's
  ``delay()``) so that the offered rate is half the peak;
- single-event requests/s and latency, without and with an ``Idempotency-Key`` each;
- the server's CPU time per request (all its threads, from /proc): on a shared
  machine this moves much less than the rates do, so compare it between runs;
- the same batched events into a stream with an ``id`` field (event-id dedup) and into
  one without, every request with new ids, alternating, and their ratio;
- the decode+validate ceiling in-process (one core), for 1,000-event and 1-event bodies;
- the load average before and after, as the machine may be busy with other work.

    python benchmarks/ingest.py [--seconds 10] [--connections 16] [--batch 1000]
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
from serverproc import ADMIN_KEY, Server, cpu_seconds

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


# Fresh event ids on every request: "<thread prefix>-<request>-<line>" in front of the
# same event. Both the id-bearing and the plain stream get exactly these bodies.
FRESH_IDS = """
local prefix = tostring(math.random(1, 1e9))
local sent = 0
local rests = {{}}
for line in io.lines("{body}") do rests[#rests + 1] = line:sub(2) end
request = function()
   sent = sent + 1
   local parts = {{}}
   local head = '{{"event_id":"' .. prefix .. "-" .. sent .. "-"
   for i = 1, #rests do parts[i] = head .. i .. '",' .. rests[i] end
   return wrk.format(nil, nil, nil, table.concat(parts, "\\n"))
end
"""


def id_streams(c: httpx.Client) -> None:
    """``bench_plain`` and ``bench_ids``: the bench fields and an ``event_id``; only the
    second declares it as its id."""
    fields = [*STREAM["fields"], {"name": "event_id", "type": "string"}]  # type: ignore[list-item]
    for name, id_field in (("bench_plain", None), ("bench_ids", "event_id")):
        body = {**STREAM, "name": name, "fields": fields, "id": id_field}
        assert c.post("/v1/streams", json=body).status_code == 201


def fresh_id_rate(
    url: str, body_file: Path, seconds: int, connections: int, pid: int
) -> tuple[float, float]:
    """Requests/s of batched requests that each carry new event ids, and the server's
    CPU milliseconds per request."""
    script = body_file.with_suffix(".ids.lua")
    script.write_text(
        LUA.format(key=ADMIN_KEY, body=body_file, pace="", keyed="")
        + FRESH_IDS.format(body=body_file)
    )
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = parse_wrk(out)
    assert res["non2xx"] == 0, out
    done = re.search(r"(\d+) requests in", out)
    requests = max(1, int(done.group(1)) if done else 1)
    return res["rps"], (cpu_seconds(pid) - cpu0) * 1000 / requests


def ndjson(n: int, start: int = 0) -> bytes:
    return b"\n".join(orjson.dumps(event(start + i)) for i in range(n)) + b"\n"


LUA = """
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["Content-Type"] = "application/x-ndjson"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
{pace}{keyed}"""
# A fresh Idempotency-Key on every request (per wrk thread: a random prefix and a counter).
KEYED = """
local prefix = tostring(math.random(1, 1e9))
local sent = 0
request = function()
   sent = sent + 1
   wrk.headers["Idempotency-Key"] = prefix .. "-" .. sent
   return wrk.format()
end
"""
# Think times drawn from an exponential distribution: arrivals close to a Poisson
# process, rather than every connection firing in step.
PACE = """
math.randomseed(os.time())
function delay()
   return math.floor(-math.log(1 - math.random()) * {ms})
end
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


def wrk(
    url: str,
    body_file: Path,
    seconds: int,
    connections: int,
    pid: int,
    delay_ms: int = 0,
    keyed: bool = False,
) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    pace = PACE.format(ms=delay_ms) if delay_ms else ""
    script.write_text(
        LUA.format(key=ADMIN_KEY, body=body_file, pace=pace, keyed=KEYED if keyed else "")
    )
    cmd = [
        "wrk",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = parse_wrk(out)
    done = re.search(r"(\d+) requests in", out)
    res["cpu_us_per_req"] = (
        (cpu_seconds(pid) - cpu0) * 1e6 / max(1, int(done.group(1)) if done else 1)
    )
    return res


def load_average() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


def decode_ceiling(batch: int) -> float:
    """Events per second of decode+validate alone, one core, in-process."""
    from headwater.ingest.batch import DecodeLimits, decode_and_validate
    from headwater.model.schema import schema_from_dict

    schema = schema_from_dict(STREAM)
    limits = DecodeLimits(1 << 26, 100_000, 32, 0, 86_400_000, 1000)
    body = ndjson(batch)
    now = int(time.time() * 1000)
    n, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while time.perf_counter() - t0 < 3:
        decode_and_validate(body, "application/x-ndjson", None, schema, limits, now)
        n += batch
    return n / (time.thread_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (apt-get install wrk)")
    print(f"load average before: {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="hw-bench-"))
    srv = Server(
        tmp / "data", HEADWATER_LOG_LEVEL="warning", HEADWATER_STORE_MAX_LAG_ROWS="1000000000"
    ).start()
    assert srv.proc is not None
    pid = srv.proc.pid
    try:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
        body = ndjson(args.batch)
        body_file = tmp / "batch.ndjson"
        body_file.write_bytes(body)
        url = f"{srv.url}/v1/streams/bench/events"
        ev_bytes = len(body) / args.batch
        wrk(url, body_file, 2, args.connections, pid)  # warm up
        peak = wrk(url, body_file, args.seconds, args.connections, pid)
        eps = peak["rps"] * args.batch
        print(
            f"batched NDJSON ({args.batch} events/request, {ev_bytes:.0f} B/event, durable), {args.connections} connections:"
        )
        print(f"  {eps:,.0f} events/s  {eps * ev_bytes / 1e6:,.1f} MB/s  "
              f"p50 {peak['p50_ms']:.1f} ms  p99 {peak['p99_ms']:.1f} ms  non-2xx {peak['non2xx']:.0f}  "
              f"server CPU {peak['cpu_us_per_req'] / 1000:.2f} ms/request")  # fmt: skip
        # Half of the peak rate: each connection waits between requests for its share.
        delay_ms = max(1, round(args.connections * 1000 / (peak["rps"] / 2)))
        half = wrk(url, body_file, args.seconds, args.connections, pid, delay_ms)
        print(f"  at ~half of peak: {half['rps'] * args.batch:,.0f} events/s  p50 {half['p50_ms']:.1f} ms  "
              f"p99 {half['p99_ms']:.1f} ms")  # fmt: skip
        single_file = tmp / "single.ndjson"
        single_file.write_bytes(ndjson(1))
        single = wrk(url, single_file, args.seconds, 32, pid)
        print(f"single-event requests (32 connections): {single['rps']:,.0f} req/s  p50 {single['p50_ms']:.1f} ms  "
              f"p99 {single['p99_ms']:.1f} ms  server CPU {single['cpu_us_per_req']:.0f} us/request")  # fmt: skip
        keyed = wrk(url, single_file, args.seconds, 32, pid, keyed=True)
        print(f"  with an Idempotency-Key each: {keyed['rps']:,.0f} req/s  p50 {keyed['p50_ms']:.1f} ms  "
              f"p99 {keyed['p99_ms']:.1f} ms  non-2xx {keyed['non2xx']:.0f}  "
              f"server CPU {keyed['cpu_us_per_req']:.0f} us/request")  # fmt: skip
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            id_streams(c)
        rates: dict[str, list[tuple[float, float]]] = {"bench_plain": [], "bench_ids": []}
        for _ in range(3):  # alternating, so both see the same load of the machine
            for name, found in rates.items():
                rps, cpu_ms = fresh_id_rate(f"{srv.url}/v1/streams/{name}/events", body_file,
                                            args.seconds, args.connections, pid)  # fmt: skip
                found.append((rps * args.batch, cpu_ms))
        pairs = list(zip(rates["bench_plain"], rates["bench_ids"], strict=True))
        ratios = sorted(ids[0] / plain[0] for plain, ids in pairs)
        cpu = sorted(plain[1] / ids[1] for plain, ids in pairs)
        print(f"new event ids on every request ({args.batch} events/request), 3 alternating pairs:")
        for plain, ids in pairs:
            print(f"  without id {plain[0]:,.0f} events/s ({plain[1]:.2f} ms CPU/request), "
                  f"with id {ids[0]:,.0f} events/s ({ids[1]:.2f} ms CPU/request)")  # fmt: skip
        print(f"  median ratio with/without id: {ratios[1]:.2f} by rate, "
              f"{cpu[1]:.2f} by server CPU per request")  # fmt: skip
        ceiling = decode_ceiling(args.batch)
        small = decode_ceiling(1)
        print(f"decode+validate alone (one core, in-process): {ceiling:,.0f} events/s in {args.batch}-event bodies; "
              f"{1e6 / small:.0f} us per 1-event body")  # fmt: skip
        print(
            f"ratio to the 100,000 events/s seed target: {eps / 100_000:.1f}x; to the 1M goal: {eps / 1e6:.2f}"
        )
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"load average after: {load_average()}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
