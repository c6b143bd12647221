"""HTTP sinks against a real fault-injecting downstream, through a real server."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest

from downstream import Answer, Downstream, events, retry_after_date, sink_status, wait_until
from serverproc import READINGS, Server


def faults(i: int, d: Downstream) -> Answer:
    """Every kind of trouble, by request number; rows at 13.5 degrees are refused (poison)."""
    if b"13.5" in d.seen[i].body:
        return Answer(422, body=b'{"error": "temperature 13.5 is not allowed"}')
    return {
        3: Answer(429, {"retry-after": "1"}),
        7: Answer(429, {"retry-after": retry_after_date(1)}),
        11: Answer(503),
        12: Answer(503),
        13: Answer(503),
        17: Answer(reset=True),
        21: Answer(200, delay_s=0.3),
    }.get(i, Answer())


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    d = Downstream(faults).start()
    yield d
    d.stop()


def test_stream_sink_retries_and_dead_letters(fresh_server: Server, downstream: Downstream) -> None:
    poison = {4, 20}
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
        r = c.post("/v1/sinks", json={
            "name": "partner", "kind": "http", "from": "readings",
            "config": {"url": downstream.url, "batch_rows": 1, "max_concurrency": 4,
                       "backoff_base_s": 0.05, "backoff_max_s": 0.5, "secret": "whsec_c2VjcmV0"},
        })  # fmt: skip
        assert r.status_code == 201, r.text
        assert (
            c.post("/v1/streams/readings/events", json=events(40, poison=poison)).json()["accepted"]
            == 40
        )
        st = wait_until(
            lambda: (s := sink_status(c, "partner"))["pending"] == 0 and s["produced"] == 40 and s,
            what="40 rows delivered or dead-lettered",
        )
        assert st["delivered"] == 38 and st["dead_lettered"] == 2
        assert st["rate_limit_hits"] >= 2 and st["requests"] > 40
        dlq = c.post("/v1/query", json={
            "sql": "SELECT offset, attempts, last_status, last_body, state, row FROM partner_dlq ORDER BY offset"
        }).json()["rows"]  # fmt: skip
        assert [(r[0], r[1], r[2], r[4]) for r in dlq] == [
            (4, 1, 422, "dead"),
            (20, 1, 422, "dead"),
        ]
        assert "13.5" in dlq[0][3] and '"event_id":"e4"' in dlq[0][5]

    delivered = downstream.delivered_rows()
    assert sorted(r["event_id"] for r in delivered) == sorted(
        f"e{i}" for i in range(40) if i not in poison
    )
    by_key: dict[str | None, set[bytes]] = defaultdict(set)
    for s in downstream.seen:
        by_key[s.key].add(s.body)
        assert s.headers["webhook-signature"].startswith("v1,")
    assert all(len(bodies) == 1 for bodies in by_key.values())  # a key always names one body
    assert len(by_key) == 40


def test_dead_letters_replay_once_after_the_fix(
    fresh_server: Server, downstream: Downstream
) -> None:
    with fresh_server.client() as c:
        c.post("/v1/streams", json=READINGS)
        c.post("/v1/sinks", json={
            "name": "partner", "kind": "webhook", "from": "readings",
            "config": {"url": downstream.url, "batch_rows": 1, "backoff_base_s": 0.05},
        })  # fmt: skip
        c.post("/v1/streams/readings/events", json=events(6, poison={1, 2}))
        wait_until(lambda: sink_status(c, "partner")["dead_lettered"] == 2, what="2 dead letters")
        downstream.script = lambda i, d: Answer()  # the partner fixed its validation
        r = c.post("/v1/sinks/partner/dlq/replay", json={"offsets": [1]})
        assert r.json() == {"name": "partner", "replaying": 1}
        assert (
            c.post("/v1/sinks/partner/dlq/replay", json={"offsets": [1]}).json()["replaying"] == 0
        )
        st = wait_until(lambda: (s := sink_status(c, "partner"))["dead_lettered"] == 1 and s)
        assert st["delivered"] == 5 and st["produced"] == 6
        rows = c.get("/v1/tables/partner_dlq/rows").json()["rows"]
        assert sorted((r["offset"], r["state"]) for r in rows) == [(1, "replayed"), (2, "dead")]
        assert c.post("/v1/sinks/partner/dlq/replay", json={"all": True}).json()["replaying"] == 1
        wait_until(lambda: sink_status(c, "partner")["dead_lettered"] == 0)
        assert c.post("/v1/sinks/partner/dlq/replay", json={"all": True}).json()["replaying"] == 0
        for wrong in ({"offsets": "1"}, {"keys": [[1]]}, {"offsets": [{}]}, {"all": 1}, []):
            bad = c.post("/v1/sinks/partner/dlq/replay", json=wrong)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_replay", wrong
    keys = [s.key for s in downstream.delivered()]
    assert sorted(keys) == [f"partner-{i}" for i in range(6)]  # each row delivered once


def test_sink_api_checks_input_roles_and_tenants(
    fresh_server: Server, downstream: Downstream
) -> None:
    with fresh_server.client() as c:
        c.post("/v1/streams", json=READINGS)
        cases = [
            ({"name": "s", "kind": "ftp", "from": "readings", "config": {}}, "unknown_sink_kind"),
            ({"name": "s", "kind": "http", "from": "nowhere", "config": {"url": downstream.url}},
             "unknown_sink_source"),
            ({"name": "s", "kind": "http", "from": "readings", "config": {"url": "ftp://x"}},
             "invalid_sink_config"),
            ({"name": "s", "kind": "http", "from": "readings",
              "config": {"url": downstream.url, "batch_rows": 0}}, "invalid_sink_config"),
            ({"name": "s", "kind": "http", "from": "readings",
              "config": {"url": downstream.url, "nope": 1}}, "invalid_sink_config"),
            ({"name": "bad name", "kind": "http", "from": "readings", "config": {}}, "invalid_name"),
            ([], "invalid_sink"),
        ]  # fmt: skip
        for body, code in cases:
            r = c.post("/v1/sinks", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
        ok = {"name": "s", "kind": "http", "from": "readings", "config": {"url": downstream.url,
              "secret": "whsec_c2VjcmV0"}}  # fmt: skip
        assert c.post("/v1/sinks", json=ok).status_code == 201
        assert c.post("/v1/sinks", json=ok).json()["error"]["code"] == "sink_exists"
        assert c.get("/v1/sinks/s").json()["config"]["secret"] == "***"
        assert c.get("/v1/sinks/zz").status_code == 404
        reader = c.post("/v1/keys", json={"role": "reader"}).json()["key"]
        with fresh_server.client(reader) as rc:
            assert rc.post("/v1/sinks/s/pause").status_code == 403
            assert rc.get("/v1/sinks/s").status_code == 200
        other = c.post("/v1/tenants", json={"name": "acme"}).json()["admin_key"]["key"]
        with fresh_server.client(other) as oc:
            assert oc.get("/v1/sinks").json() == {"sinks": []}
            assert oc.get("/v1/sinks/s").status_code == 404
            r = oc.post("/v1/sinks", json={**ok, "name": "t"})  # default's stream: not visible
            assert r.json()["error"]["code"] == "unknown_sink_source"
        assert c.post("/v1/sinks/s/pause").json()["status"] == "paused"
        c.post("/v1/streams/readings/events", json=events(3))
        assert c.get("/v1/sinks/s").json().get("produced", 0) == 0
        assert c.post("/v1/sinks/s/resume").json()["status"] in ("running", "backing_off")
        wait_until(lambda: sink_status(c, "s")["delivered"] == 3)
        assert c.delete("/v1/sinks/s?drop_tables=true").status_code == 200
        assert c.get("/v1/sinks").json() == {"sinks": []}


def test_aggregate_results_follow_their_changes(fresh_server: Server) -> None:
    """Upserts of a GROUP BY pipeline reach the sink; the last value per key is the total."""
    d = Downstream().start()
    try:
        with fresh_server.client() as c:
            c.post("/v1/streams", json=READINGS)
            sql = (
                "CREATE PIPELINE per_device AS SELECT device_id, count(*) AS n FROM readings "
                "GROUP BY device_id WITH (emit = 'changes')"
            )
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            r = c.post("/v1/sinks", json={"name": "totals", "kind": "http", "from": "per_device",
                                          "config": {"url": d.url, "batch_rows": 1}})  # fmt: skip
            assert r.status_code == 201, r.text
            for start in (0, 50, 100):
                c.post("/v1/streams/readings/events", json=events(50, start))
                wait_until(lambda s=start: sink_status(c, "totals")["produced"] > 0
                           and _last_counts(d).get("d0", 0) == (s + 50) // 5)  # fmt: skip
            st = wait_until(lambda: (s := sink_status(c, "totals"))["pending"] == 0 and s)
        assert _last_counts(d) == {f"d{i}": 30 for i in range(5)}
        assert st["dead_lettered"] == 0 and st["delivered"] == st["produced"] >= 5
        keys = [s.key for s in d.delivered()]
        assert len(set(keys)) == len(keys)  # each version of a row has its own key
    finally:
        d.stop()


def _last_counts(d: Downstream) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in d.delivered_rows():
        out[row["device_id"]] = max(out.get(row["device_id"], 0), row["n"])
    return out


def test_a_sink_whose_pipeline_is_gone_fails_alone_after_a_restart(
    fresh_server: Server, downstream: Downstream
) -> None:
    with fresh_server.client() as c:
        c.post("/v1/streams", json=READINGS)
        c.post("/v1/pipelines", json={"sql": "CREATE PIPELINE p AS SELECT device_id FROM readings"})
        body = {"name": "s", "kind": "http", "from": "p", "config": {"url": downstream.url}}
        assert c.post("/v1/sinks", json=body).status_code == 201
        assert c.delete("/v1/pipelines/p").status_code == 200
    fresh_server.stop()
    fresh_server.start()
    with fresh_server.client() as c:
        st = c.get("/v1/sinks/s").json()
        assert st["status"] == "failed" and "'p'" in st["reason"], st
        r = c.post("/v1/sinks/s/resume")
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_sink_source"
        bad = c.post("/v1/sinks/s/dlq/replay", json={"keys": [[1]]})
        assert bad.status_code in (400, 409)


def test_a_sink_created_after_an_erasure_never_sends_the_subject(fresh_server: Server) -> None:
    stream = {
        "name": "signups", "event_time": "ts", "subject": "user",
        "fields": [{"name": "user", "type": "string", "required": True},
                   {"name": "ts", "type": "timestamp", "required": True}],
    }  # fmt: skip
    d = Downstream().start()
    try:
        with fresh_server.client() as c:
            assert c.post("/v1/streams", json=stream).status_code == 201
            rows = [{"user": u, "ts": "2026-12-01T10:00:00Z"} for u in ("u1", "u2", "u1", "u3")]
            assert c.post("/v1/streams/signups/events", json=rows).json()["accepted"] == 4
            assert c.delete("/v1/streams/signups/subjects/u1").status_code < 300
            c.post("/v1/sinks", json={"name": "s", "kind": "http", "from": "signups",
                                      "config": {"url": d.url, "batch_rows": 1}})  # fmt: skip
            wait_until(lambda: sink_status(c, "s")["produced"] == 2 and
                       sink_status(c, "s")["pending"] == 0)  # fmt: skip
        assert sorted(r["user"] for r in d.delivered_rows()) == ["u2", "u3"]
        assert sorted(s.key for s in d.delivered()) == ["s-1", "s-3"]  # keys keep offsets
    finally:
        d.stop()
