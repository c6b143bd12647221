"""Python functions a server loads from ``udf_modules``, called in pipeline SQL over HTTP;
never loadable from a request, and absent from ad-hoc queries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from serverproc import READINGS, Server

TESTS = Path(__file__).resolve().parents[1]


def test_functions_from_udf_modules_run_in_pipelines(tmp_path: Path) -> None:
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    srv = Server(tmp_path / "data", HEADWATER_UDF_MODULES="udf_functions", PYTHONPATH=path)
    srv.start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json={**READINGS, "name": "r"}).status_code == 201
            sql = ("CREATE PIPELINE feels AS SELECT device_id, site_of(device_id) AS site, "
                   "heat_index(temperature, temperature) AS hi FROM r")  # fmt: skip
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            events = [{"device_id": "abc", "ts": "2026-11-21T10:00:00Z", "temperature": 20.0,
                       "event_id": "e1"}]  # fmt: skip
            assert c.post("/v1/streams/r/events", json=events).json()["accepted"] == 1
            deadline = time.monotonic() + 20
            while not (rows := c.get("/v1/tables/feels/rows").json()["rows"]):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert [(r["site"], r["hi"]) for r in rows] == [("A", 22.0)]
            # ad-hoc queries run in the store's sandbox: the function is not there
            r = c.post("/v1/query", json={"sql": "SELECT heat_index(1.0, 2.0)"})
            assert r.status_code == 400 and "heat_index" in r.text
    finally:
        srv.stop()


def test_a_module_that_does_not_import_stops_the_start(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_UDF_MODULES="no_such_udf_module")
    with pytest.raises(RuntimeError, match="no_such_udf_module"):
        srv.start(timeout_s=300)  # returns as soon as the server exits
