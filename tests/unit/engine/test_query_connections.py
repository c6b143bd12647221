"""Pipelines' row queries share one in-memory DuckDB: no threads per query, UTC always."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from headwater.engine.operators.query import BatchQuery

SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.timestamp("ms", tz="UTC"))])


def _threads() -> int:
    return len(os.listdir(f"/proc/{os.getpid()}/task"))


def test_queries_cost_no_threads_each() -> None:
    BatchQuery("SELECT k FROM __hw_batch", SCHEMA)  # the shared database exists from here
    before = _threads()
    queries = [BatchQuery(f"SELECT k, {i} AS n FROM __hw_batch", SCHEMA) for i in range(20)]
    assert _threads() - before < 2
    batch = pa.table({"k": ["a"], "ts": pa.array([0], pa.timestamp("ms", tz="UTC"))})
    assert [q.run(batch).rows.column("n")[0].as_py() for q in queries] == list(range(20))


def test_each_query_sees_only_its_own_batch() -> None:
    a = BatchQuery("SELECT k FROM __hw_batch", SCHEMA)
    b = BatchQuery("SELECT k FROM __hw_batch", SCHEMA)
    ts = pa.array([0], pa.timestamp("ms", tz="UTC"))
    assert a.run(pa.table({"k": ["a"], "ts": ts})).rows.column("k").to_pylist() == ["a"]
    assert b.run(pa.table({"k": ["b"], "ts": ts})).rows.column("k").to_pylist() == ["b"]


def test_expressions_are_utc_whatever_the_server_time_zone(tmp_path: Path) -> None:
    code = (
        "import pyarrow as pa\n"
        "from headwater.engine.operators.query import BatchQuery\n"
        "s = pa.schema([('ts', pa.timestamp('ms', tz='UTC'))])\n"
        "q = BatchQuery(\"SELECT hour(ts) AS h, strftime(ts, '%Y-%m-%d') AS d FROM __hw_batch\", s)\n"
        "t = pa.table({'ts': pa.array([1767236400000], pa.timestamp('ms', tz='UTC'))})\n"
        "print(q.run(t).rows.to_pylist())\n"
    )  # 1767236400000 = 2026-01-01T03:00:00Z: 22:00 of Dec 31 in New York
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "TZ": "America/New_York"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "[{'h': 3, 'd': '2026-01-01'}]"
