"""MATCH_RECOGNIZE through HTTP against a real server: matches equal the reference's."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from pattern_reference import reference_matches
from serverproc import READINGS, Server

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()


def iso(sec: float) -> str:
    return datetime.fromtimestamp(T0 + sec, UTC).isoformat().replace("+00:00", "Z")


def wait_for(fn, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def post(c: httpx.Client, stream: str, events: list[dict[str, Any]]) -> None:
    body = b"\n".join(orjson.dumps(e) for e in events)
    r = c.post(f"/v1/streams/{stream}/events", content=body,
               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert r.json()["accepted"] == len(events), r.text


SQL = """CREATE PIPELINE {name} AS
SELECT m.device_id, start_ts, rises, top FROM {stream} MATCH_RECOGNIZE (
    PARTITION BY device_id ORDER BY ts
    MEASURES FIRST(A.ts) AS start_ts, COUNT(B.*) AS rises, MAX(B.temperature) AS top
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (A B{{2,}} C) WITHIN INTERVAL '1' MINUTE
    DEFINE B AS B.temperature > PREV(B.temperature),
           C AS C.temperature < PREV(C.temperature)
) AS m
WITH (watermark_delay = '5 seconds')"""


def readings(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"device_id": f"d{i % 3}", "ts": iso(i * 2.0), "temperature": float(rng.randint(0, 6)),
         "event_id": f"e{i}"}
        for i in range(n)
    ]  # fmt: skip


def reference(events: list[dict[str, Any]]) -> list[list[Any]]:
    want = []
    conds = {
        "B": lambda r, i, v, lab: i > 0 and r[i]["temperature"] > r[i - 1]["temperature"],
        "C": lambda r, i, v, lab: i > 0 and r[i]["temperature"] < r[i - 1]["temperature"],
    }
    for d in ("d0", "d1", "d2"):
        rows = [{"t": i, **e} for i, e in enumerate(e for e in events if e["device_id"] == d)]
        for m in reference_matches("A B{2,} C", rows, conds):
            b = [rows[i]["temperature"] for i, v in m if v == "B"]
            want.append([d, rows[m[0][0]]["ts"], len(b), max(b)])
    return sorted(want)


def results(c: httpx.Client, table: str, n: int) -> list[list[Any]] | None:
    rows = c.get(f"/v1/tables/{table}/rows", params={"limit": 10_000}).json().get("rows", [])
    if len(rows) < n:
        return None
    out = []
    for r in rows:
        start = datetime.fromisoformat(r["start_ts"].replace("Z", "+00:00")).timestamp() - T0
        out.append([r["device_id"], iso(start), r["rises"], r["top"]])
    return sorted(out)


def test_rising_runs_match_the_reference_and_late_rows_are_kept(server: Server) -> None:
    events = readings(240, 7)
    with server.client() as c:
        assert c.post("/v1/streams", json={**READINGS, "name": "mr_in"}).status_code == 201
        r = c.post("/v1/pipelines", json={"sql": SQL.format(name="runs", stream="mr_in")})
        assert r.status_code == 201, r.text
        shuffled = events[:]
        for i in range(0, len(shuffled) - 1, 2):  # neighbours swap: out of order within the delay
            shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
        post(c, "mr_in", shuffled[:120])
        post(c, "mr_in", shuffled[120:])
        # a far-later row moves the watermark past everything above
        post(
            c,
            "mr_in",
            [{"device_id": "zz", "ts": iso(3600), "temperature": 0.0, "event_id": "end"}],
        )
        post(
            c, "mr_in", [{"device_id": "d0", "ts": iso(10), "temperature": 9.0, "event_id": "late"}]
        )

        want = reference(events)
        assert len(want) >= 10
        assert wait_for(lambda: results(c, "runs", len(want))) == want
        late = wait_for(lambda: c.get("/v1/tables/runs_late/rows").json().get("rows"))
        assert [r["event_id"] for r in late] == ["late"]
        status = c.get("/v1/pipelines/runs").json()
        assert status["kind"] == "pattern", status


def test_kill9_between_batches_loses_and_repeats_no_match(fresh_server: Server) -> None:
    events = readings(300, 11)
    want = reference(events)
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json={**READINGS, "name": "mr_crash"}).status_code == 201
        sql = SQL.format(name="crash_runs", stream="mr_crash")
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
    for k in range(0, 300, 100):
        with fresh_server.client() as c:
            post(c, "mr_crash", events[k : k + 100])
            if k == 100:  # let some matches and partial matches reach a checkpoint first
                wait_for(lambda: results(c, "crash_runs", 1))
        fresh_server.kill()  # mid-run, partial matches open: state comes back from the store
        fresh_server.start()
    with fresh_server.client() as c:
        post(c, "mr_crash", [{"device_id": "zz", "ts": iso(3600), "temperature": 0.0,
                              "event_id": "end"}])  # fmt: skip
        assert wait_for(lambda: results(c, "crash_runs", len(want))) == want
        assert len(
            c.get("/v1/tables/crash_runs/rows", params={"limit": 10_000}).json()["rows"]
        ) == len(want)


def test_match_recognize_errors_say_what_to_fix(server: Server) -> None:
    with server.client() as c:
        assert c.post("/v1/streams", json={**READINGS, "name": "mr_bad"}).status_code == 201
        base = SQL.format(name="bad", stream="mr_bad")
        cases = [
            (base.replace(" WITHIN INTERVAL '1' MINUTE", ""), "unsupported_sql", "WITHIN"),
            (
                base.replace("A B{{2,}} C".replace("{{", "{").replace("}}", "}"), "A (B C"),
                "sql_syntax_error",
                "missing ')'",
            ),
            (base.replace("PREV(B.temperature)", "NEXT(B.temperature)"), "query_error", "NEXT"),
            (
                base.replace("ONE ROW PER MATCH", "ALL ROWS PER MATCH"),
                "unsupported_sql",
                "ALL ROWS",
            ),
        ]
        for sql, code, words in cases:
            r = c.post("/v1/pipelines", json={"sql": sql})
            assert r.status_code == 400, (sql, r.text)
            err = r.json()["error"]
            assert err["code"] == code and words in err["message"], err
