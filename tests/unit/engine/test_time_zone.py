"""Expressions evaluate in UTC whatever the machine's time zone (``TZ``)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "headwater"

# 2026-01-01T02:00Z is 2025-12-31 21:00 in New York: a different day and hour.
PROBE = r"""
import json
import duckdb
import pyarrow as pa
from headwater.engine import Pipeline
from headwater.ingest.rules import _connection
from headwater.query.runner import connect_locked

ts = pa.array([1767232800000], pa.timestamp("ms", tz="UTC"))
schema = pa.schema([("ts", ts.type)])
sql = ("CREATE PIPELINE p AS SELECT strftime(ts, '%Y-%m-%d') AS day, hour(ts) AS h, "
       "CAST(date_trunc('day', ts) AS VARCHAR) AS d FROM events")
rows = Pipeline.from_sql(sql, schema).process(pa.table({"ts": ts}), now_ms=0).appends.to_pylist()
query = "SELECT strftime(TIMESTAMPTZ '2026-01-01 02:00:00+00', '%Y-%m-%d %H')"
out = {
    "machine": duckdb.connect().sql("SELECT current_setting('TimeZone')").fetchall()[0][0],
    "pipeline": rows,
    "query": connect_locked(":memory:", memory_limit="100MB", threads=1).sql(query).fetchall()[0][0],
    "rules": _connection().sql(query).fetchall()[0][0],
}
print(json.dumps(out))
"""


def test_expressions_answer_in_utc_under_a_new_york_tz() -> None:
    env = {**os.environ, "TZ": "America/New_York"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["machine"] == "America/New_York"  # the probe does run under another zone
    assert out["pipeline"] == [{"day": "2026-01-01", "h": 2, "d": "2026-01-01 00:00:00+00"}]
    assert out["query"] == out["rules"] == "2026-01-01 02"


def test_every_duckdb_connection_is_opened_by_connect_duckdb() -> None:
    """A new ``duckdb.connect`` elsewhere would run in the machine's time zone."""
    found = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "connect"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "duckdb"
            ):
                found.append(str(path.relative_to(SRC)))
    assert found == ["engine/connection.py"]
