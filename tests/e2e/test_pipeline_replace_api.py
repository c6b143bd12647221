"""Replacing a pipeline keeps its state when the change allows it, through HTTP."""

from __future__ import annotations

import itertools
import time
from typing import Any

import httpx

from serverproc import READINGS, Server

_seq = itertools.count()


def stream(c: httpx.Client) -> str:
    name = f"rp{next(_seq)}"
    assert c.post("/v1/streams", json={**READINGS, "name": name}).status_code == 201
    return name


def ts(sec: float) -> str:
    return f"2026-11-21T10:00:{sec:06.3f}Z"


def send(c: httpx.Client, s: str, temps: list[float], at: float, tag: str) -> None:
    events = [{"device_id": "a", "ts": ts(at + i * 0.01), "temperature": t,
               "event_id": f"{tag}{i}"} for i, t in enumerate(temps)]  # fmt: skip
    assert c.post(f"/v1/streams/{s}/events", json=events).json()["accepted"] == len(temps)


def wait_for(fn, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def rows(c: httpx.Client, table: str) -> list[dict[str, Any]]:
    return list(c.get(f"/v1/tables/{table}/rows").json()["rows"])


def window_sql(name: str, s: str, extra: str = "", where: str = "", size: str = "1 minute") -> str:
    return (
        f"CREATE PIPELINE {name} AS SELECT device_id, window_start, count(*) AS n, "
        f"sum(temperature) AS total{extra} FROM TUMBLE({s}, ts, INTERVAL '{size}') {where}"
        "GROUP BY device_id, window_start, window_end WITH (emit = 'changes')"
    )


def test_a_new_column_and_filter_keep_the_window_state_and_offsets(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_w"
        assert c.post("/v1/pipelines", json={"sql": window_sql(name, s)}).status_code == 201
        send(c, s, [10.0, 20.0, 30.0], 1, "x")
        assert wait_for(lambda: [(r["n"], r["total"]) for r in rows(c, name)] == [(3, 60.0)])
        assert wait_for(lambda: c.get(f"/v1/pipelines/{name}").json()["committed_offset"] == 3)

        new = window_sql(name, s, extra=", sum(temperature) / count(*) AS mean",
                         where="WHERE temperature > 15 AND temperature < 80 ")  # fmt: skip
        r = c.put(f"/v1/pipelines/{name}", json={"sql": new})
        assert r.status_code == 200, r.text
        assert r.json()["sql"] == new
        send(c, s, [40.0, 90.0], 2, "y")  # 90 fails the new filter
        # the window goes on from the old state (3 rows, 10 among them) plus 40: re-read
        # under the new filter it would hold 20, 30 and 40 only
        got = wait_for(lambda: [(r["n"], r["total"], r["mean"]) for r in rows(c, name)]
                       == [(4, 100.0, 25.0)])  # fmt: skip
        assert got, rows(c, name)
        st = wait_for(lambda: (lambda st: st if st["committed_offset"] == 5 else None)(
            c.get(f"/v1/pipelines/{name}").json()))  # fmt: skip
        assert st["metrics"]["rows_in"] == 2  # it went on from offset 3


def test_an_incompatible_change_says_what_state_it_drops(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_w"
        old = window_sql(name, s)
        assert c.post("/v1/pipelines", json={"sql": old}).status_code == 201
        send(c, s, [10.0, 20.0], 1, "x")
        assert wait_for(lambda: [r["n"] for r in rows(c, name)] == [2])

        wider = window_sql(name, s, size="5 minutes")
        r = c.put(f"/v1/pipelines/{name}", json={"sql": wider})
        assert r.status_code == 409, r.text
        err = r.json()["error"]
        assert err["code"] == "state_would_be_dropped"
        assert "the window (TUMBLE 1 minute becomes TUMBLE 5 minutes)" in err["message"]
        assert "reset_state = true" in err["message"]
        other_agg = old.replace("sum(temperature)", "max(temperature)")
        r = c.post("/v1/pipelines", json={"sql": other_agg.replace("CREATE", "CREATE OR REPLACE")})
        assert r.status_code == 409 and "the aggregates" in r.json()["error"]["message"]
        st = c.get(f"/v1/pipelines/{name}").json()
        assert st["sql"] == old and st["status"] == "running"  # untouched

        reset = ", reset_state = true)".join(wider.rsplit(")", 1))
        r = c.put(f"/v1/pipelines/{name}", json={"sql": reset})
        assert r.status_code == 200, r.text
        assert r.json()["sql"] == wider
        send(c, s, [30.0], 3, "z")
        # started over from the stream's start: all three rows, in the 5-minute window
        assert wait_for(lambda: [r["n"] for r in rows(c, name)] == [3])
        # the same through the body (what the dashboard sends): back to 1-minute windows,
        # read again from the start
        r = c.put(f"/v1/pipelines/{name}", json={"sql": old, "reset_state": True})
        assert r.status_code == 200, r.text
        assert r.json()["sql"] == old
        assert wait_for(lambda: [r["n"] for r in rows(c, name)] == [3])  # all in one minute


def test_create_or_replace_creates_or_keeps_state(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_w"
        sql = window_sql(name, s).replace("CREATE PIPELINE", "CREATE OR REPLACE PIPELINE")
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        send(c, s, [1.0], 1, "x")
        assert wait_for(lambda: [r["n"] for r in rows(c, name)] == [1])
        again = sql.replace("AS total", "AS total, count(*) + 1 AS n1")
        r = c.post("/v1/pipelines", json={"sql": again})
        assert r.status_code == 201, r.text  # POST answers 201 whether it created or replaced
        send(c, s, [2.0], 2, "y")
        assert wait_for(lambda: [(r["n"], r["n1"]) for r in rows(c, name)] == [(2, 3)])
