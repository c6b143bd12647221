"""docs/sql.md is honest: its examples run on a real server, and it covers every aggregate
and option the planner knows.

A ```sql block preceded by ``<!-- run -->`` must create a pipeline (201), which is then
dropped; ``<!-- keep -->`` keeps it (a later example reads it); one preceded by
``<!-- error: code -->`` must be refused with that error code. The stream the examples
read is the JSON block the page shows.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import get_args

import orjson
import pytest

from headwater.engine.plan import AggFunc
from headwater.engine.sql.options import DURATIONS
from serverproc import READINGS, Server

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"
TEXT = DOC.read_text()
BLOCK = re.compile(r"<!-- (run|keep|error: (\w+)) -->\s*```sql\n(.*?)```", re.S)
EXAMPLES = [(m.group(2), m.group(3).strip()) for m in BLOCK.finditer(TEXT)]
KEPT = {m.group(3).strip() for m in BLOCK.finditer(TEXT) if m.group(1) == "keep"}
DEVICES = {
    "name": "devices",
    "key": ["device_id"],
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "site", "type": "string"},
        {"name": "floor", "type": "int"},
    ],
}
# How each aggregate the engine computes is written in the page's table.
AGGREGATE_NAMES = {
    "count_star": "count(*)",
    "count": "count(x)",
    "count_distinct": "count(DISTINCT x)",
    "sum": "sum(x)",
    "avg": "avg(x)",
    "min": "min(x)",
    "max": "max(x)",
    "var_samp": "var_samp(x)",
    "var_pop": "var_pop(x)",
    "stddev_samp": "stddev_samp(x)",
    "stddev_pop": "stddev_pop(x)",
    "approx_count_distinct": "approx_count_distinct(x)",
    "approx_quantile": "approx_quantile(x, q)",
    "quantile_cont": "quantile_cont(x, q)",
    "arg_min": "arg_min(x, by)",
    "arg_max": "arg_max(x, by)",
}


def name_of(sql: str) -> str:
    found = re.match(r"CREATE PIPELINE (\w+)", sql)
    assert found, sql
    return found.group(1)


@pytest.fixture(scope="module")
def docs_server(server: Server) -> Server:
    with server.client() as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
        assert c.post("/v1/tables", json=DEVICES).status_code == 201
        rows = [{"device_id": "d1", "site": "north", "floor": 2}]
        assert c.post("/v1/tables/devices/rows", json=rows).json()["accepted"] == 1
    return server


def test_the_page_has_examples_of_both_kinds() -> None:
    assert sum(code is None for code, _ in EXAMPLES) >= 10
    assert sum(code is not None for code, _ in EXAMPLES) >= 3


def test_the_stream_shown_is_the_one_the_examples_run_on() -> None:
    shown = re.search(r"```json\n(.*?)```", TEXT, re.S)
    assert shown is not None
    assert orjson.loads(shown.group(1)) == READINGS


@pytest.mark.parametrize(
    ("code", "sql"), EXAMPLES, ids=[f"{name_of(s)}-{c or 'run'}" for c, s in EXAMPLES]
)
def test_example(docs_server: Server, code: str | None, sql: str) -> None:
    with docs_server.client() as c:
        r = c.post("/v1/pipelines", json={"sql": sql})
        if code is None:
            assert r.status_code == 201, r.text
            if sql in KEPT:
                return
            dropped = c.delete(f"/v1/pipelines/{name_of(sql)}", params={"drop_tables": "true"})
            assert dropped.status_code == 200
        else:
            assert r.status_code >= 400, r.text
            assert r.json()["error"]["code"] == code, r.text


def test_every_aggregate_is_documented() -> None:
    assert set(get_args(AggFunc)) == set(AGGREGATE_NAMES)
    for func, written in AGGREGATE_NAMES.items():
        assert f"`{written}`" in TEXT, f"aggregate {func} is missing from docs/sql.md"


def test_every_option_is_documented() -> None:
    for option in (*DURATIONS, "emit", "start"):
        assert f"| `{option}` |" in TEXT, f"option {option} is missing from docs/sql.md"


def test_the_late_rows_walkthrough_happens_as_written(docs_server: Server) -> None:
    sql = next(s for _, s in EXAMPLES if name_of(s) == "late_demo")
    events = "/v1/streams/readings/events"
    with docs_server.client() as c:
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        first = [
            {
                "device_id": "d1",
                "ts": "2026-11-21T10:00:10Z",
                "temperature": 20.0,
                "event_id": "w1",
            },
            {
                "device_id": "d1",
                "ts": "2026-11-21T10:01:10Z",
                "temperature": 21.0,
                "event_id": "w2",
            },
        ]
        assert c.post(events, json=first).json()["accepted"] == 2
        rows = wait_for(lambda: c.get("/v1/tables/late_demo/rows").json()["rows"])
        assert [(r["window_start"], r["window_end"], r["n"]) for r in rows] == [
            ("2026-11-21T10:00:00Z", "2026-11-21T10:01:00Z", 1)
        ]
        late = {
            "device_id": "d1",
            "ts": "2026-11-21T10:00:30Z",
            "temperature": 22.0,
            "event_id": "w3",
        }
        assert c.post(events, json=late).json()["accepted"] == 1
        got = wait_for(lambda: c.get("/v1/tables/late_demo_late/rows").json()["rows"])
        assert [(r["event_id"], r["_window_start"], r["_reason"]) for r in got] == [
            ("w3", "2026-11-21T10:00:00Z", "window_closed")
        ]
        assert c.get("/v1/tables/late_demo/rows").json()["rows"][0]["n"] == 1


def wait_for(fetch, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (found := fetch()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found
