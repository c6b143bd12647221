"""End-to-end latency: from ingest to the result row a client can see, under steady load.

Starts a fresh ``headwater serve``, creates a stream and two pipelines over it:

- ``lat_changes``: per-device 1-minute tumbling count, ``emit = 'changes'``;
- ``lat_final``: per-device tumbling count over ``--final-window`` (5 s) windows,
  ``emit = 'final'``, ``watermark_delay = --delay`` (1 s), so a run sees many windows
  close (a 1-minute window would close once a minute).

Load: ``--clients`` processes (16 sender threads each) POST batched NDJSON
(``--batch`` events per request, events from 10k devices, event time = the wall clock
when the body is built, every body unique) at ``--rate`` events/s in total, paced on a
schedule (a late request is sent at once, never skipped). Two more processes follow
``GET /v1/tables/{name}/subscribe`` (SSE) of each result table, as a dashboard would.

Probes (``emit = 'changes'``): one request at a time, every ``--probe-every`` seconds
(or as soon as the previous probe was seen), carries ``batch - 1`` load events and one
event of a fresh device ``probe-K``. Measured, on the machine's monotonic clock:

- from the request being *sent* and from its 2xx being *received* (acked, durable)
- to the row of ``probe-K`` being visible in ``GET /v1/tables/lat_changes/rows?device_id=probe-K``
  (polled every ``--poll-every``, 10 ms; the time is when the answer holding it arrived)
  and to the first SSE event holding it arriving.

Watermark-bound results (``emit = 'final'``): a device ``wm-probe`` has an event in every
window ``[s, s + W)``; the window can close once an event with time >= ``s + W + delay``
exists, i.e. at wall-clock time ``T = s + W + delay`` (load events carry the wall
clock). Measured: from ``T`` to ``wm-probe``'s row of that window being visible (GET,
polled from ``T`` on, and SSE). The target is ``T + 250 ms``, i.e. window end + delay + 250 ms.

    python benchmarks/latency.py                       # 100k events/s for 60 s
    python benchmarks/latency.py --rate 50000 --seconds 30 --py-spy /tmp/server.svg
    python benchmarks/latency.py --workers 1              # operators in a worker process
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import contextlib

from headwater.model.time import parse_duration_ms
from serverproc import ADMIN_KEY, Server, children, cpu_seconds

STREAM = {
    "name": "lat_readings",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float"},
        {"name": "seq", "type": "int"},
    ],
    "event_time": "ts",
    "key": ["device_id"],
}
CHANGES = """CREATE PIPELINE lat_changes AS
SELECT device_id, window_start, window_end, count(*) AS n
FROM TUMBLE(lat_readings, ts, INTERVAL '1 minute')
GROUP BY device_id, window_start, window_end
WITH (emit = 'changes', watermark_delay = '{delay}')"""
FINAL = """CREATE PIPELINE lat_final AS
SELECT device_id, window_start, window_end, count(*) AS n
FROM TUMBLE(lat_readings, ts, INTERVAL '{window}')
GROUP BY device_id, window_start, window_end
WITH (emit = 'final', watermark_delay = '{delay}')"""
DEVICES = 10_000
THREADS = 16  # senders per load process: enough that a slow answer does not slow the schedule
HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/x-ndjson"}


def iso(wall_s: float) -> str:
    return (
        datetime.fromtimestamp(wall_s, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def body(n: int, seq: int, extra: tuple[bytes, ...] = ()) -> bytes:
    """``n`` load events stamped now (device ``seq + i`` mod 10k), then ``extra`` lines."""
    now = iso(time.time()).encode()
    lines = [
        b'{"device_id":"device-%05d","ts":"%s","temperature":%d.5,"seq":%d}'
        % ((seq + i) % DEVICES, now, (seq + i) % 40, seq + i)
        for i in range(n)
    ]
    return b"\n".join([*lines, *extra]) + b"\n"


# ------------------------------------------------------------------------- load


def load_client(
    url: str, rate: float, batch: int, start: float, stop: float, seq0: int, out: Any
) -> None:
    """One process of ``THREADS`` senders, each on its own schedule and connection.

    Reports every request as (sent at, seconds to the answer, events acked): times on
    the monotonic clock, which all processes of the machine share.
    """
    per_thread = rate / batch / THREADS
    results: list[tuple[float, float, int]] = []

    def send(j: int) -> None:
        with httpx.Client(headers=HEADERS, timeout=30) as c:
            i = 0
            while (due := start + (i + j / THREADS) / per_thread) < stop:
                time.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() >= stop:
                    break
                payload = body(batch, seq0 + (i * THREADS + j) * batch)
                t0 = time.monotonic()
                r = c.post(url, content=payload)
                results.append((t0, time.monotonic() - t0, batch if r.status_code < 300 else 0))
                i += 1

    workers = [threading.Thread(target=send, args=(j,)) for j in range(THREADS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put({"requests": results})


# -------------------------------------------------------------------------- SSE


def sse_client(url: str, table: str, ready: Any, out: Any) -> None:
    """Report when each probe row first shows up in the table's SSE feed; runs until killed.

    Events are split on raw bytes (a changes feed carries megabytes per second; a
    line decoder that re-joins its buffer per chunk would fall behind) and only events
    that mention a probe are parsed. Each sighting is sent at once, with the counts.
    """
    seen: set[str] = set()
    resyncs = events = 0
    buf = bytearray()
    try:
        with httpx.stream(
            "GET", f"{url}/v1/tables/{table}/subscribe", params={"key": ADMIN_KEY}, timeout=60
        ) as r:
            for chunk in r.iter_raw():
                mono, wall = time.monotonic(), time.time()
                ready.set()
                scan = max(0, len(buf) - 1)
                buf += chunk
                while (end := buf.find(b"\n\n", scan)) >= 0:
                    event = bytes(buf[:end])
                    del buf[: end + 2]
                    scan = 0
                    if not event.startswith(b"data: "):
                        continue
                    events += 1
                    resyncs += b'"resync"' in event[:40]
                    if b"probe" not in event:  # probe-K and wm-probe rows
                        continue
                    for key in _probe_keys(event[6:]) - seen:
                        seen.add(key)
                        out.put({"table": table, "key": key, "mono": mono, "wall": wall})
                    out.put({"table": table, "sse_events": events, "resyncs": resyncs})
    except httpx.HTTPError as exc:
        out.put({"error": f"SSE {table}: {exc!r}"})


def _probe_keys(payload: bytes) -> set[str]:
    keys = set()
    for row in orjson.loads(payload)["rows"]:
        dev = row["device_id"]
        if dev.startswith(("probe-", "wm-probe")):
            start = datetime.fromisoformat(row["window_start"]).timestamp()
            keys.add(f"{dev}@{start:.0f}")
    return keys


# ----------------------------------------------------------------------- probes


@dataclass
class Probes:
    send_to_poll: list[float] = field(default_factory=list)
    ack_to_poll: list[float] = field(default_factory=list)
    sent: dict[str, tuple[float, float]] = field(default_factory=dict)  # device -> (sent, acked)
    lost: int = 0


def probe_changes(
    url: str, batch: int, every: float, poll: float, stop: float, seq0: int
) -> Probes:
    p = Probes()
    rows_url = "/v1/tables/lat_changes/rows"
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        k, next_at = 0, time.monotonic()
        while next_at < stop:
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + every, time.monotonic())  # behind: skip, never burst
            dev = f"probe-{k:05d}"
            marker = b'{"device_id":"%s","ts":"%s","temperature":1.0,"seq":-1}' % (
                dev.encode(),
                iso(time.time()).encode(),
            )
            payload = body(batch - 1, seq0 + k * batch, (marker,))
            t_sent = time.monotonic()
            r = c.post(f"/v1/streams/{STREAM['name']}/events", content=payload)
            t_ack = time.monotonic()
            k += 1
            if r.status_code >= 300:
                p.lost += 1
                continue
            p.sent[dev] = (t_sent, t_ack)
            deadline = t_ack + 10
            while time.monotonic() < deadline:
                got = c.get(rows_url, params={"device_id": dev, "limit": 1}).json().get("rows")
                if got:
                    t_vis = time.monotonic()
                    p.send_to_poll.append(t_vis - t_sent)
                    p.ack_to_poll.append(t_vis - t_ack)
                    break
                time.sleep(poll)
            else:
                p.lost += 1
    return p


@dataclass
class Windows:
    poll: list[float] = field(default_factory=list)  # visible - T, seconds
    due: dict[str, float] = field(default_factory=dict)  # "wm-probe@start" -> T (wall)
    lost: int = 0


def probe_final(
    url: str, window_s: float, delay_s: float, poll: float, stop_wall: float
) -> Windows:
    """Per window: an event of ``wm-probe`` early in it, then poll for its row from T on."""
    w = Windows()
    rows_url = "/v1/tables/lat_final/rows"
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        start = (time.time() // window_s + 1) * window_s
        while start + window_s + delay_s + 2 < stop_wall:
            time.sleep(max(0.0, start + 0.1 * window_s - time.time()))
            marker = (
                b'{"device_id":"wm-probe","ts":"%s","temperature":1.0,"seq":-2}'
                % iso(time.time()).encode()
            )
            c.post(f"/v1/streams/{STREAM['name']}/events", content=marker + b"\n")
            due = start + window_s + delay_s
            w.due[f"wm-probe@{start:.0f}"] = due
            time.sleep(max(0.0, due - time.time()))
            deadline = due + 10
            params = {
                "device_id": "wm-probe",
                "from": iso(start),
                "to": iso(start + window_s),
                "limit": 1,
            }
            while time.time() < deadline:
                if c.get(rows_url, params=params).json().get("rows"):
                    w.poll.append(time.time() - due)
                    break
                time.sleep(poll)
            else:
                w.lost += 1
            start += window_s
    return w


# ---------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def line(name: str, seconds: list[float]) -> str:
    ms = [x * 1000 for x in seconds]
    return f"  {name:<34} n={len(ms):<4} p50 {pct(ms, 0.5):7.1f} ms  p99 {pct(ms, 0.99):7.1f} ms  max {max(ms, default=float('nan')):7.1f} ms"


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def py_spy(pid: int, seconds: float, out: str, extra: str = "") -> subprocess.Popen[bytes] | None:
    if shutil.which("py-spy") is None:
        print("py-spy not found; no profile")
        return None
    cmd = ["py-spy", "record", "-p", str(pid), "-d", str(int(seconds)), "-o", out, "--nonblocking"]
    if out.endswith((".json", ".txt")):
        cmd += ["--format", "speedscope" if out.endswith(".json") else "raw"]
    cmd += extra.split()
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100_000, help="events/s in total")
    ap.add_argument("--seconds", type=float, default=60, help="measured time, after warm-up")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=2, help="load processes")
    ap.add_argument("--probe-every", type=float, default=0.25, help="seconds between probes")
    ap.add_argument("--poll-every", type=float, default=0.01, help="pause between GET polls")
    ap.add_argument("--final-window", default="5 seconds")
    ap.add_argument("--delay", type=float, default=1.0, help="watermark_delay, seconds")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--no-sse", action="store_true", help="no SSE subscribers (GET only)")
    ap.add_argument(
        "--workers", type=int, default=0, help="pipeline_workers: processes running the operators"
    )
    ap.add_argument(
        "--py-spy", default=None, help="record the server with py-spy (.svg/.json/.txt)"
    )
    ap.add_argument(
        "--py-spy-args", default="", help="more py-spy flags, e.g. '--gil' (GIL holders only)"
    )
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hw-latency-"))
    srv = Server(
        tmp / "data", HEADWATER_LOG_LEVEL="warning", HEADWATER_PIPELINE_WORKERS=str(args.workers)
    ).start()
    try:
        run(args, srv)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: Any, srv: Server) -> None:
    window_s = parse_duration_ms(args.final_window) / 1000
    with srv.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        delay = f"{args.delay:g} seconds"
        for sql in (
            CHANGES.format(delay=delay),
            FINAL.format(window=args.final_window, delay=delay),
        ):
            r = c.post("/v1/pipelines", json={"sql": sql})
            assert r.status_code == 201, r.text
    ctx = mp.get_context("spawn")
    out: Any = ctx.Queue()
    begin = time.monotonic() + 2.0
    measure = (begin + args.warmup, begin + args.warmup + args.seconds)
    tables = () if args.no_sse else ("lat_changes", "lat_final")
    ready = [ctx.Event() for _ in tables]
    sse = [
        ctx.Process(target=sse_client, args=(srv.url, t, ready[i], out))
        for i, t in enumerate(tables)
    ]
    url = f"{srv.url}/v1/streams/{STREAM['name']}/events"
    rate, seq = args.rate / args.clients, 10**12
    load = [
        ctx.Process(
            target=load_client, args=(url, rate, args.batch, begin, measure[1], i * seq, out)
        )
        for i in range(args.clients)
    ]
    for p in [*sse, *load]:
        p.start()
    for e in ready:
        e.wait(30)
    time.sleep(max(0.0, measure[0] - time.monotonic()))
    spy = (
        py_spy(srv.proc.pid, args.seconds, args.py_spy, args.py_spy_args)
        if args.py_spy and srv.proc
        else None
    )
    stop_wall = time.time() + (measure[1] - time.monotonic())
    fin: list[Windows] = []
    final = threading.Thread(
        target=lambda: fin.append(
            probe_final(srv.url, window_s, args.delay, args.poll_every, stop_wall)
        )
    )
    final.start()
    assert srv.proc is not None
    workers = children(srv.proc.pid)
    cpu0, wcpu0 = cpu_seconds(srv.proc.pid), cpu_of(workers)
    probes = probe_changes(
        srv.url, args.batch, args.probe_every, args.poll_every, measure[1], 9 * seq
    )
    took = max(1e-9, time.monotonic() - measure[0])
    server_cpu = (cpu_seconds(srv.proc.pid) - cpu0) / took
    worker_cpu = (cpu_of(workers) - wcpu0) / took
    final.join()
    results = []
    while sum("requests" in r for r in results) < len(load):
        results.append(out.get(timeout=120))
    time.sleep(1.0)  # the last sightings on their way
    for p in sse:
        p.terminate()
    for p in [*sse, *load]:
        p.join(30)
    while not out.empty():
        results.append(out.get())
    if spy is not None:
        spy.wait(60)
    with srv.client() as c:
        status = {n: c.get(f"/v1/pipelines/{n}").json() for n in ("lat_changes", "lat_final")}
    report(args, measure, probes, fin[0], results, status)
    print(f"server process CPU while measuring: {server_cpu:.0%} of one core")
    if args.workers:
        print(f"pipeline worker processes ({len(workers)}) CPU: {worker_cpu:.0%} of one core")


def report(
    args: Any,
    measure: tuple[float, float],
    probes: Probes,
    fin: Windows,
    results: list[dict[str, Any]],
    status: dict[str, Any],
) -> None:
    loads = [r for r in results if "requests" in r]
    window = [x for r in loads for x in r["requests"] if measure[0] <= x[0] < measure[1]]
    seconds = measure[1] - measure[0]
    events = sum(n for *_, n in window)
    print(f"load: {events / seconds:,.0f} events/s acked while measuring ({seconds:.0f} s, target "
          f"{args.rate:,.0f}), {args.batch}-event NDJSON requests, "
          f"{sum(1 for *_, n in window if n == 0)} non-2xx")  # fmt: skip
    print(line("ingest request (send -> ack)", [lat for _, lat, _ in window]))
    seen: dict[str, dict[str, tuple[float, float]]] = {"lat_changes": {}, "lat_final": {}}
    counts: dict[str, tuple[int, int]] = {}
    for r in results:
        if "error" in r:
            print(f"SSE client failed: {r['error']}")
        elif "key" in r:
            seen[r["table"]][r["key"]] = (r["mono"], r["wall"])
        elif "sse_events" in r:
            counts[r["table"]] = (r["sse_events"], r["resyncs"])
    sse_notes = [
        f"{t} {n} events for {status[t].get('metrics', {}).get('commits')} commits, {rs} resyncs"
        for t, (n, rs) in counts.items()
    ]
    by_dev = {k.split("@")[0]: v for k, v in seen["lat_changes"].items()}
    print(
        f"emit='changes' (1-minute tumbling count): {len(probes.sent)} probes, {probes.lost} not seen in GET"
    )
    print(line("sent  -> visible in GET rows", probes.send_to_poll))
    print(line("acked -> visible in GET rows", probes.ack_to_poll))
    if not args.no_sse:
        print(
            line(
                "sent  -> pushed on SSE",
                [by_dev[d][0] - s for d, (s, _) in probes.sent.items() if d in by_dev],
            )
        )
        print(
            line(
                "acked -> pushed on SSE",
                [by_dev[d][0] - a for d, (_, a) in probes.sent.items() if d in by_dev],
            )
        )
    print(f"emit='final' ({args.final_window} tumbling, watermark_delay {args.delay:g} s): "
          f"{len(fin.due)} windows, {fin.lost} not seen in GET; from T = window end + delay:")  # fmt: skip
    print(line("T -> visible in GET rows", fin.poll))
    if not args.no_sse:
        print(
            line(
                "T -> pushed on SSE",
                [
                    seen["lat_final"][k][1] - due
                    for k, due in fin.due.items()
                    if k in seen["lat_final"]
                ],
            )
        )
    print("  (target: p99 of these <= 250 ms, i.e. visible by window end + delay + 250 ms)")
    if sse_notes:
        print("SSE: " + "; ".join(sse_notes))
    for name, st in status.items():
        m = st.get("metrics", {})
        print(f"{name}: {m.get('commits')} commits, {m.get('rows_in'):,} rows in, "
              f"{m.get('late_rows')} late, commit cycle p50 {m.get('batch_ms_p50') or 0:.0f} ms "
              f"p99 {m.get('batch_ms_p99') or 0:.0f} ms, log lag {m.get('log_lag_rows')} rows")  # fmt: skip
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f}, cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
