"""The classic scenario (a rate-limited, flaky partner API) and kill -9 mid-delivery."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from downstream import Answer, Downstream, RateLimited, events, sink_status, wait_until
from serverproc import READINGS, Server


def test_pipeline_results_reach_a_rate_limited_flaky_api(fresh_server: Server) -> None:
    """10 req/s (429 + Retry-After beyond), 15% random 500s, 50-250 ms latency:
    nothing lost, >= 5 req/s, error rate <= 30%, backlog bounded by max_pending_rows."""
    partner = Downstream(RateLimited(per_s=10, fail=0.15, latency_s=(0.05, 0.25))).start()
    n = 1200
    try:
        with fresh_server.client() as c:
            c.post("/v1/streams", json=READINGS)
            sql = "CREATE PIPELINE hot AS SELECT device_id, event_id, temperature * 2 AS t2 FROM readings"
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            r = c.post("/v1/sinks", json={
                "name": "partner", "kind": "http", "from": "hot",
                "config": {"url": partner.url, "batch_rows": 20, "max_concurrency": 4,
                           "rate_limit_per_s": 9.5, "max_pending_rows": 400},
            })  # fmt: skip
            assert r.status_code == 201, r.text
            for start in range(0, n, 300):
                c.post("/v1/streams/readings/events", json=events(300, start))
            pending: list[int] = []

            def finished() -> bool:
                st = sink_status(c, "partner")
                pending.append(st["pending"])
                return st["delivered"] == n and st["pending"] == 0

            wait_until(finished, timeout_s=120, what="every result row delivered")
            st = sink_status(c, "partner")
        assert st["dead_lettered"] == 0 and st["produced"] == n
        assert st["error_rate"] <= 0.30, st
        assert max(pending) <= 400  # bounded backlog: stops reading, never drops
        ok = partner.delivered()
        rate = len(ok) / (ok[-1].at - ok[0].at)
        assert rate >= 5.0, rate
        assert sorted(r["event_id"] for r in partner.delivered_rows()) == sorted(
            f"e{i}" for i in range(n)
        )
        assert st["rate_limit_hits"] + partner_statuses(partner).get(500, 0) > 0
    finally:
        partner.stop()


def partner_statuses(d: Downstream) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for s in d.seen:
        if s.status is not None:
            out[s.status] += 1
    return out


def test_kill_9_mid_delivery_loses_nothing_and_repeats_only_same_keys(tmp_path: Path) -> None:
    slow = Downstream(lambda i, d: Answer(200, delay_s=0.02)).start()
    server = Server(tmp_path / "data").start()
    n = 400
    try:
        with server.client() as c:
            c.post("/v1/streams", json=READINGS)
            c.post("/v1/sinks", json={
                "name": "partner", "kind": "http", "from": "readings",
                "config": {"url": slow.url, "batch_rows": 1, "max_concurrency": 4},
            })  # fmt: skip
            c.post("/v1/streams/readings/events", json=events(n))
        for _ in range(2):  # kill -9 twice while requests are in flight
            seen = len(slow.seen)
            wait_until(lambda s=seen: len(slow.seen) >= s + 40, what="deliveries in flight")
            server.kill()
            server.start()
        with server.client() as c:
            st = wait_until(
                lambda: (s := sink_status(c, "partner"))["pending"] == 0
                and s["produced"] == n and s,
                timeout_s=120, what="the backlog delivered after restarts",
            )  # fmt: skip
        assert st["delivered"] == n and st["dead_lettered"] == 0
        bodies: dict[str | None, set[bytes]] = defaultdict(set)
        for s in slow.delivered():
            bodies[s.key].add(s.body)
        assert sorted(bodies) == sorted(f"partner-{i}" for i in range(n))  # nothing lost
        assert all(len(b) == 1 for b in bodies.values())  # a repeat carries the same key
        repeats = len(slow.delivered()) - n
        # A crash repeats only the chunks whose cursor was not committed yet (a few of 4
        # requests each, more when the machine is slow), never the backlog before them.
        assert repeats <= n // 8
    finally:
        server.stop()
        slow.stop()


def test_a_failing_partner_never_holds_ingest_or_pipelines(fresh_server: Server) -> None:
    down = Downstream(lambda i, d: Answer(503)).start()
    try:
        with fresh_server.client() as c:
            c.post("/v1/streams", json=READINGS)
            c.post(
                "/v1/pipelines", json={"sql": "CREATE PIPELINE p AS SELECT event_id FROM readings"}
            )
            c.post("/v1/sinks", json={"name": "s", "kind": "http", "from": "readings", "config": {
                "url": down.url, "batch_rows": 10, "max_pending_rows": 100,
                "breaker_failures": 3, "breaker_open_s": 0.5, "backoff_max_s": 0.2, "max_attempts": 1000,
            }})  # fmt: skip
            for start in range(0, 2000, 500):
                r = c.post("/v1/streams/readings/events", json=events(500, start))
                assert r.json()["accepted"] == 500
            wait_until(lambda: c.post("/v1/query", json={"sql": "SELECT count(*) FROM p"}).json()
                       ["rows"] == [[2000]], what="the pipeline keeps up")  # fmt: skip
            st = wait_until(
                lambda: (s := sink_status(c, "s"))["blocked"] and s["breaker"] != "closed" and s,
                what="the sink stops reading at max_pending_rows",
            )
            assert st["pending"] <= 100 and st["produced"] <= 100 and st["lag_rows"] >= 1900
            assert st["status"] == "backing_off" and st["delivered"] == 0
            down.script = lambda i, d: Answer()  # the partner is back
            st = wait_until(
                lambda: (s := sink_status(c, "s"))["delivered"] == 2000 and s,
                what="the backlog delivered",
            )
            assert st["dead_lettered"] == 0 and st["pending"] == 0 and st["breaker"] == "closed"
    finally:
        down.stop()


def test_kill_9_with_a_pipeline_sink_loses_no_result(tmp_path: Path) -> None:
    slow = Downstream(lambda i, d: Answer(200, delay_s=0.01)).start()
    server = Server(tmp_path / "data").start()
    n = 600
    try:
        with server.client() as c:
            c.post("/v1/streams", json=READINGS)
            sql = "CREATE PIPELINE hot AS SELECT event_id, temperature * 2 AS t2 FROM readings"
            c.post("/v1/pipelines", json={"sql": sql})
            c.post("/v1/sinks", json={"name": "out", "kind": "http", "from": "hot",
                                      "config": {"url": slow.url, "batch_rows": 5}})  # fmt: skip
            for start in range(0, n, 100):
                c.post("/v1/streams/readings/events", json=events(100, start))
                if start == 300:  # kill while results are being delivered
                    wait_until(lambda: len(slow.seen) >= 10, what="deliveries in flight")
                    server.kill()
                    server.start()
        with server.client() as c:
            wait_until(lambda: sink_status(c, "out")["delivered"] >= n and
                       sink_status(c, "out")["pending"] == 0, timeout_s=120)  # fmt: skip
        got = [r["event_id"] for r in slow.delivered_rows()]
        assert set(got) == {f"e{i}" for i in range(n)}  # nothing lost
        bodies: dict[str | None, set[bytes]] = defaultdict(set)
        for s in slow.delivered():
            bodies[s.key].add(s.body)
        assert all(len(b) == 1 for b in bodies.values())
    finally:
        server.stop()
        slow.stop()
