"""Joins of two streams through HTTP against a real server, each checked against the
same join run in DuckDB batch over the stored streams."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx
import orjson

from serverproc import READINGS, Server

_seq = itertools.count()


def stream(c: httpx.Client, prefix: str) -> str:
    name = f"{prefix}{next(_seq)}"
    assert c.post("/v1/streams", json={**READINGS, "name": name}).status_code == 201
    return name


def ts(sec: float) -> str:
    m, s = divmod(sec, 60)
    return f"2026-11-21T10:{int(m):02d}:{s:06.3f}Z"


def send(c: httpx.Client, s: str, events: list[dict[str, Any]]) -> None:
    body = b"\n".join(orjson.dumps(e) for e in events)
    r = c.post(
        f"/v1/streams/{s}/events", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert r.json()["accepted"] == len(events), r.text


def wait_for(fn, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def rows_of(c: httpx.Client, table: str, columns: list[str]) -> list[list[Any]]:
    rows = c.get(f"/v1/tables/{table}/rows", params={"limit": 1000}).json().get("rows", [])
    return sorted(([r[k] for k in columns] for r in rows), key=repr)


def test_interval_left_join_of_two_streams_matches_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        a, b = stream(c, "ja"), stream(c, "jb")
        body = (
            f"SELECT x.event_id AS a_id, y.event_id AS b_id, x.device_id, "
            f"x.temperature AS a_t, y.temperature AS b_t FROM {a} x LEFT JOIN {b} y "
            "ON x.device_id = y.device_id "
            "AND x.ts >= y.ts - INTERVAL '10 seconds' AND x.ts <= y.ts"
        )
        r = c.post("/v1/pipelines", json={"sql": f"CREATE PIPELINE {a}_j AS {body}"})
        assert r.status_code == 201, r.text
        assert r.json()["inputs"] == [a, b]
        send(c, a, [{"device_id": f"d{i % 3}", "ts": ts(i * 2.0), "temperature": float(i),
                     "event_id": f"a{i}"} for i in range(60)])  # fmt: skip
        send(c, b, [{"device_id": f"d{i % 4}", "ts": ts(i * 3.0 + 1), "temperature": float(-i),
                     "event_id": f"b{i}"} for i in range(40)])  # fmt: skip
        end = {"device_id": "end", "ts": ts(1200), "temperature": 0.0}
        send(c, a, [{**end, "event_id": "a_end"}])
        send(c, b, [{**end, "event_id": "b_end"}])
        batch = body
        answer = c.post("/v1/query", json={"sql": batch}).json()
        assert "rows" in answer, answer
        want = sorted(answer["rows"], key=repr)
        assert len(want) >= 60 and any(w[1] is None for w in want)  # left rows without a match
        columns = ["a_id", "b_id", "device_id", "a_t", "b_t"]
        got = wait_for(lambda: (lambda r: r if len(r) >= len(want) else None)(
            rows_of(c, f"{a}_j", columns)))  # fmt: skip
        assert got == want
        send(c, b, [{"device_id": "d1", "ts": ts(3), "temperature": 1.0, "event_id": "late"}])
        late = wait_for(lambda: rows_of(c, f"{a}_j_late", ["event_id", "_stream", "_reason"]))
        assert late == [["late", b, "behind_watermark"]]
        st = c.get(f"/v1/pipelines/{a}_j").json()
        assert st["metrics"]["rows_in"] == 103


def test_join_of_two_streams_without_a_bound_answers_400(server: Server) -> None:
    with server.client() as c:
        a, b = stream(c, "jc"), stream(c, "jd")
        sql = (f"CREATE PIPELINE {a}_j AS SELECT x.device_id FROM {a} x JOIN {b} y "
               "ON x.device_id = y.device_id")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 400
        assert "join of two streams without a time bound" in r.json()["error"]["message"]


PER_MINUTE = ("SELECT device_id, window_start, window_end, count(*) AS n, max(temperature) AS hi "
              "FROM TUMBLE({s}, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, window_end")  # fmt: skip
BATCH_PER_MINUTE = ("SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS window_start, "
                    "count(*) AS n, max(temperature) AS hi FROM {s} "
                    "WHERE event_id NOT LIKE '%end' GROUP BY ALL")  # fmt: skip


def readings(prefix: str, count: int, step: float) -> list[dict[str, Any]]:
    return [{"device_id": f"d{i % 3}", "ts": ts(i * step), "temperature": float(i % 13),
             "event_id": f"{prefix}{i}"} for i in range(count)]  # fmt: skip


def test_a_pipeline_over_a_pipeline_and_a_subquery_match_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        s = stream(c, "ch")
        up = f"CREATE PIPELINE {s}_dev AS {PER_MINUTE.format(s=s)}"
        assert c.post("/v1/pipelines", json={"sql": up}).status_code == 201
        over = (f"CREATE PIPELINE {s}_top AS SELECT window_start, max(n) AS busiest, "
                f"max(hi) AS hottest FROM {s}_dev GROUP BY window_start, window_end")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": over})
        assert r.status_code == 201, r.text
        kinds = [o["kind"] for o in r.json()["operators"]]
        assert kinds == ["source", "window_aggregate", "window_aggregate"]
        sub = (f"CREATE PIPELINE {s}_hot AS SELECT device_id, window_start, n FROM "
               f"({PER_MINUTE.format(s=s)}) w WHERE hi >= 12")  # fmt: skip
        assert c.post("/v1/pipelines", json={"sql": sub}).status_code == 201
        send(c, s, readings("e", 200, 1.3))  # 10:00 .. 10:04:20
        send(c, s, [{"device_id": "x", "ts": ts(900), "temperature": 0.0, "event_id": "end"}])
        per = BATCH_PER_MINUTE.format(s=s)
        want_top = c.post("/v1/query", json={"sql": (
            f"SELECT window_start, max(n), max(hi) FROM ({per}) GROUP BY 1")}).json()["rows"]  # fmt: skip
        want_hot = c.post("/v1/query", json={"sql": (
            f"SELECT device_id, window_start, n FROM ({per}) WHERE hi >= 12")}).json()["rows"]  # fmt: skip
        assert len(want_top) == 5 and want_hot
        got_top = wait_for(lambda: (lambda r: r if len(r) >= 5 else None)(
            rows_of(c, f"{s}_top", ["window_start", "busiest", "hottest"])))  # fmt: skip
        assert got_top == sorted(want_top, key=repr)
        got_hot = wait_for(lambda: (lambda r: r if len(r) >= len(want_hot) else None)(
            rows_of(c, f"{s}_hot", ["device_id", "window_start", "n"])))  # fmt: skip
        assert got_hot == sorted(want_hot, key=repr)
        r = c.delete(f"/v1/pipelines/{s}_dev")
        assert r.status_code == 409 and f"{s}_top" in r.json()["error"]["message"]


def test_a_window_join_of_two_streams_matches_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        a, b = stream(c, "wa"), stream(c, "wb")
        body = (
            "SELECT x.device_id, x.window_start, x.n AS a_n, y.n AS b_n, y.hi AS b_hi FROM "
            f"({PER_MINUTE.format(s=a)}) x LEFT JOIN ({PER_MINUTE.format(s=b)}) y "
            "ON x.device_id = y.device_id AND x.window_start = y.window_start "
            "AND x.window_end = y.window_end"
        )
        r = c.post("/v1/pipelines", json={"sql": f"CREATE PIPELINE {a}_wj AS {body}"})
        assert r.status_code == 201, r.text
        assert "window_join" in [o["kind"] for o in r.json()["operators"]]
        send(c, a, readings("a", 120, 1.5))  # 10:00 .. 10:02:58
        send(c, b, [e for e in readings("b", 150, 0.8) if e["device_id"] != "d2"])
        end = {"device_id": "x", "ts": ts(900), "temperature": 0.0}
        send(c, a, [{**end, "event_id": "a_end"}])
        send(c, b, [{**end, "event_id": "b_end"}])
        batch = (
            "SELECT x.device_id, x.window_start, x.n, y.n, y.hi FROM "
            f"({BATCH_PER_MINUTE.format(s=a)}) x LEFT JOIN ({BATCH_PER_MINUTE.format(s=b)}) y "
            "ON x.device_id = y.device_id AND x.window_start = y.window_start"
        )
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        assert len(want) == 9 and any(w[3] is None for w in want)
        columns = ["device_id", "window_start", "a_n", "b_n", "b_hi"]
        got = wait_for(lambda: (lambda r: r if len(r) >= len(want) else None)(
            rows_of(c, f"{a}_wj", columns)))  # fmt: skip
        assert got == want


def test_a_regular_join_with_a_state_ttl_matches_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        a, b = stream(c, "ra"), stream(c, "rb")
        body = (f"SELECT x.event_id AS a_id, y.event_id AS b_id, y.temperature - x.temperature "
                f"AS diff FROM {a} x JOIN {b} y ON x.device_id = y.device_id "
                "AND x.status <> y.status")  # fmt: skip
        sql = (f"CREATE PIPELINE {a}_r AS {body} "
               "WITH (state_ttl = '1 hour', time_columns = 'x.ts, y.ts')")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        assert "regular_join" in [o["kind"] for o in r.json()["operators"]]
        statuses = ["ok", "warn", "error"]
        send(c, a, [{**e, "status": statuses[i % 3]} for i, e in enumerate(readings("a", 40, 5))])
        send(c, b, [{**e, "status": statuses[i % 2]} for i, e in enumerate(readings("b", 30, 7))])
        want = sorted(c.post("/v1/query", json={"sql": body}).json()["rows"], key=repr)
        assert len(want) > 50
        got = wait_for(lambda: (lambda r: r if len(r) >= len(want) else None)(
            rows_of(c, f"{a}_r", ["a_id", "b_id", "diff"])))  # fmt: skip
        assert got == want


def test_joined_pairs_counted_per_minute_match_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        a, b = stream(c, "pa"), stream(c, "pb")
        joined = (f"SELECT x.device_id, y.ts FROM {a} x JOIN {b} y ON x.device_id = y.device_id "
                  "AND x.ts >= y.ts - INTERVAL '5 seconds' AND x.ts <= y.ts")  # fmt: skip
        sql = (f"CREATE PIPELINE {a}_pm AS SELECT device_id, window_start, count(*) AS pairs "
               f"FROM TUMBLE(({joined}), ts, INTERVAL '1 minute') j "
               "GROUP BY device_id, window_start, window_end")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        send(c, a, readings("a", 100, 1.7))
        send(c, b, readings("b", 80, 2.1))
        end = {"device_id": "x", "ts": ts(900), "temperature": 0.0}
        send(c, a, [{**end, "event_id": "a_end"}])
        send(c, b, [{**end, "event_id": "b_end"}])
        batch = (f"SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS ws, count(*) FROM "
                 f"({joined}) WHERE device_id <> 'x' GROUP BY ALL")  # fmt: skip
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        assert len(want) >= 6
        got = wait_for(lambda: (lambda r: r if len(r) >= len(want) else None)(
            rows_of(c, f"{a}_pm", ["device_id", "window_start", "pairs"])))  # fmt: skip
        assert got == want
