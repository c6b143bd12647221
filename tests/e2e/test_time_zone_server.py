"""A server whose machine runs in New York still answers in UTC, in pipelines and queries."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serverproc import READINGS, Server

# 02:00 and 20:00 UTC on 1 January: one UTC day, but 31 December and 1 January in New York.
EVENTS = [
    {"device_id": "d1", "ts": "2026-01-01T02:00:00Z", "temperature": 20.0, "event_id": "a"},
    {"device_id": "d1", "ts": "2026-01-01T20:00:00Z", "temperature": 21.0, "event_id": "b"},
]


@pytest.fixture(scope="module")
def new_york_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("tz") / "data", TZ="America/New_York").start()
    yield srv
    srv.stop()


def rows_of(server: Server, table: str, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20.0
    with server.client() as c:
        while True:
            rows: list[dict[str, Any]] = c.get(f"/v1/tables/{table}/rows").json().get("rows", [])
            if len(rows) >= want or time.monotonic() > deadline:
                return rows
            time.sleep(0.1)


def test_day_and_hour_expressions_are_utc(new_york_server: Server) -> None:
    with new_york_server.client() as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
        hours = (
            "CREATE PIPELINE hours AS SELECT event_id, strftime(ts, '%Y-%m-%d') AS day, "
            "hour(ts) AS h FROM readings"
        )
        days = (
            "CREATE PIPELINE days AS SELECT strftime(ts, '%Y-%m-%d') AS day, count(*) AS n "
            "FROM readings GROUP BY strftime(ts, '%Y-%m-%d') WITH (emit = 'changes')"
        )
        for sql in (hours, days):
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        assert c.post("/v1/streams/readings/events", json=EVENTS).json()["accepted"] == 2
        query = (
            "SELECT event_id, strftime(ts, '%Y-%m-%d') AS day, hour(ts) AS h "
            "FROM readings ORDER BY event_id"
        )
        answer = c.post("/v1/query", json={"sql": query})
        assert answer.status_code == 200, answer.text
        assert answer.json()["rows"] == [
            ["a", "2026-01-01", 2],
            ["b", "2026-01-01", 20],
        ]
    got = sorted(rows_of(new_york_server, "hours", 2), key=lambda r: r["event_id"])
    assert [(r["day"], r["h"]) for r in got] == [("2026-01-01", 2), ("2026-01-01", 20)]
    daily = rows_of(new_york_server, "days", 1)
    assert [(r["day"], r["n"]) for r in daily] == [("2026-01-01", 2)]
    log = Path(new_york_server.log_path).read_text()
    assert "Traceback" not in log
