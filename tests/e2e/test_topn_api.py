"""Window Top-N and ``_received_at`` through HTTP against a real server, each checked
against the same query run in DuckDB batch over the stored stream."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import httpx
import orjson

from serverproc import ADMIN_KEY, READINGS, Server

_seq = itertools.count()


def stream(c: httpx.Client) -> str:
    name = f"tn{next(_seq)}"
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


def test_top_3_devices_per_window_match_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        sql = (
            f"CREATE PIPELINE {s}_top AS SELECT * FROM (SELECT device_id, window_start, "
            "max(temperature) AS hi, count(*) AS n, ROW_NUMBER() OVER (PARTITION BY "
            "window_start ORDER BY max(temperature) DESC) AS rn "
            f"FROM TUMBLE({s}, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, "
            "window_end) WHERE rn <= 3"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        events = [
            {"device_id": f"d{i % 7}", "ts": ts(i * 0.9), "temperature": float(i * 13 % 11),
             "event_id": f"e{i}"}
            for i in range(200)
        ]  # fmt: skip  # 0 .. 179 s: windows 10:00, 10:01, 10:02 (ties in temperature)
        send(c, s, events)
        send(c, s, [{"device_id": "end", "ts": ts(600), "temperature": 0.0, "event_id": "end"}])
        batch = (
            "SELECT device_id, window_start, hi, n, rn FROM (SELECT *, ROW_NUMBER() OVER "
            "(PARTITION BY window_start ORDER BY hi DESC, device_id, window_start, n) AS rn "
            "FROM (SELECT device_id, time_bucket(INTERVAL '1 minute', ts) AS window_start, "
            f"max(temperature) AS hi, count(*) AS n FROM {s} WHERE event_id <> 'end' "
            "GROUP BY 1, 2)) WHERE rn <= 3"
        )
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        assert len(want) == 9
        columns = ["device_id", "window_start", "hi", "n", "rn"]
        got = wait_for(
            lambda: (lambda r: r if len(r) >= 9 else None)(rows_of(c, f"{s}_top", columns))
        )
        assert got == want


def test_highest_reading_of_each_window_matches_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        sql = (
            f"CREATE PIPELINE {s}_peak AS SELECT device_id, ts, temperature, window_start, rn "
            "FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY "
            f"temperature DESC) AS rn FROM HOP({s}, ts, INTERVAL '30 seconds', "
            "INTERVAL '1 minute')) WHERE rn <= 2"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        events = [
            {"device_id": f"d{i % 5}", "ts": ts(i * 1.3), "temperature": float(i * 7 % 10),
             "event_id": f"e{i}"}
            for i in range(120)
        ]  # fmt: skip  # 0 .. 155 s
        send(c, s, events)
        send(c, s, [{"device_id": "end", "ts": ts(900), "temperature": 0.0, "event_id": "end"}])
        batch = (
            "SELECT device_id, ts, temperature, window_start, rn FROM (SELECT *, ROW_NUMBER() "
            "OVER (PARTITION BY window_start ORDER BY temperature DESC, device_id, ts, "
            "temperature, window_start) AS rn FROM (SELECT device_id, ts, temperature, "
            "time_bucket(INTERVAL '30 seconds', ts) - INTERVAL (j * 30) SECOND AS window_start "
            f"FROM {s}, range(2) AS r(j) WHERE event_id <> 'end')) WHERE rn <= 2"
        )
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        assert len(want) == 2 * 7  # windows from 09:59:30 to 10:02:30
        columns = ["device_id", "ts", "temperature", "window_start", "rn"]
        got = wait_for(
            lambda: (lambda r: r if len(r) >= 14 else None)(rows_of(c, f"{s}_peak", columns))
        )
        assert got == want


def test_unsupported_top_n_is_refused_naming_it(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        sql = (
            f"CREATE PIPELINE {s}_bad AS SELECT device_id, window_start, max(temperature) AS hi "
            f"FROM TUMBLE({s}, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, "
            "window_end QUALIFY ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY "
            "max(temperature)) <= 3"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "unsupported_sql"
        assert "Top-N without window_start in PARTITION BY" in err["message"]


def test_windows_on_received_at_group_rows_by_arrival(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        sql = (
            f"CREATE PIPELINE {s}_arr AS SELECT device_id, window_start, count(*) AS n, "
            f"max(_received_at) AS last_seen FROM TUMBLE({s}, _received_at, INTERVAL '1 second') "
            "GROUP BY device_id, window_start, window_end WITH (emit = 'changes')"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        old = [{"device_id": "a", "ts": ts(0), "event_id": f"x{i}"} for i in range(5)]
        send(c, s, old)
        second = int(time.time())
        assert wait_for(lambda: int(time.time()) > second)  # the next arrival second
        send(c, s, [{"device_id": "a", "ts": ts(1), "event_id": f"y{i}"} for i in range(3)])
        batch = (
            "SELECT device_id, epoch_ms(time_bucket(INTERVAL '1 second', "
            "make_timestamp(_received_ms * 1000))) AS ws, count(*) AS n, max(_received_ms) "
            f"FROM {s} GROUP BY 1, 2"
        )
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        assert len(want) >= 2 and sum(w[2] for w in want) == 8  # two arrival windows at least

        def got() -> list[list[Any]] | None:
            rows = c.post("/v1/query", json={"sql": (
                "SELECT device_id, epoch_ms(window_start), n, epoch_ms(last_seen) "
                f"FROM {s}_arr")}).json().get("rows", [])  # fmt: skip
            return sorted(rows, key=repr) if sorted(rows, key=repr) == want else None

        assert wait_for(got) == want


def test_moving_average_matches_duckdb_batch(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        w = "(PARTITION BY device_id ORDER BY ts {frame})"
        rows_w, range_w = (
            w.format(frame="ROWS 3 PRECEDING"),
            w.format(frame="RANGE INTERVAL '10 seconds' PRECEDING"),
        )
        sql = (
            f"CREATE PIPELINE {s}_avg AS SELECT event_id, avg(temperature) OVER {rows_w} AS a, "
            f"max(temperature) OVER {range_w} AS m FROM {s} WITH (watermark_delay = '2 seconds')"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        events = [
            {"device_id": f"d{i % 3}", "ts": ts(i * 1.5), "temperature": float(i * 7 % 10),
             "event_id": f"e{i}"}
            for i in range(90)
        ]  # fmt: skip
        send(c, s, events)
        send(c, s, [{"device_id": "end", "ts": ts(900), "temperature": 0.0, "event_id": "end"}])
        batch = (
            f"SELECT event_id, avg(temperature) OVER {rows_w} AS a, "
            f"max(temperature) OVER {range_w} AS m FROM {s} WHERE event_id <> 'end'"
        )
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        got = wait_for(
            lambda: (lambda r: r if len(r) >= 90 else None)(
                rows_of(c, f"{s}_avg", ["event_id", "a", "m"])
            )
        )
        assert len(got) == 90
        for g, e in zip(got, want, strict=True):
            assert g[0] == e[0] and abs(g[1] - e[1]) < 1e-9 and g[2] == e[2]


def test_top_n_with_changes_replaces_a_row_leaving_the_top_and_subscribers_see_it(
    server: Server,
) -> None:
    with server.client() as c:
        s = stream(c)
        sql = (
            f"CREATE PIPELINE {s}_live AS SELECT device_id, window_start, max(temperature) "
            "AS hi, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY max(temperature) "
            f"DESC) AS rn FROM TUMBLE({s}, ts, INTERVAL '1 minute') GROUP BY device_id, "
            "window_start, window_end QUALIFY rn <= 2 WITH (emit = 'changes')"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        seen: list[dict[str, Any]] = []
        ready = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{server.url}/v1/tables/{s}_live/subscribe",
                              params={"key": ADMIN_KEY}, timeout=20) as r:  # fmt: skip
                for line in r.iter_lines():
                    ready.set()
                    if line.startswith("data: "):
                        seen.extend(orjson.loads(line[6:])["rows"])
                        if any(x["device_id"] == "c" for x in seen):
                            return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        assert ready.wait(10)
        columns = ["device_id", "hi", "rn"]
        one = [{"device_id": d, "ts": ts(i), "temperature": v, "event_id": f"a{i}"}
               for i, (d, v) in enumerate([("a", 30.0), ("b", 20.0)])]  # fmt: skip
        send(c, s, one)  # the window stays open: no later event closes it
        assert wait_for(lambda: rows_of(c, f"{s}_live", columns) == [["a", 30.0, 1],
                                                                      ["b", 20.0, 2]])  # fmt: skip
        send(c, s, [{"device_id": "c", "ts": ts(5), "temperature": 25.0, "event_id": "c"}])
        # b left the top 2: rank 2 now holds c, and b is gone from the table
        assert wait_for(lambda: rows_of(c, f"{s}_live", columns) == [["a", 30.0, 1],
                                                                      ["c", 25.0, 2]])  # fmt: skip
        t.join(15)
        assert {"device_id": "c", "hi": 25.0, "rn": 2}.items() <= seen[-1].items(), seen
        batch = (
            "SELECT device_id, hi, rn FROM (SELECT device_id, max(temperature) AS hi, "
            "ROW_NUMBER() OVER (ORDER BY max(temperature) DESC) AS rn "
            f"FROM {s} GROUP BY 1) WHERE rn <= 2"
        )
        want = sorted(c.post("/v1/query", json={"sql": batch}).json()["rows"], key=repr)
        assert rows_of(c, f"{s}_live", columns) == want
