"""The windows benchmark's query on Apache Flink SQL (PyFlink, local, streaming mode).

Run by ``benchmarks/windows.py`` in a child process (so the JVM never shares the
parent's heap, and another interpreter can be named with ``--flink-python``); it can
also be run alone on a CSV file of ``device_id,ts_ms,temperature,status`` rows:

    python benchmarks/flink_windows.py --input events.csv --output out/ [--parallelism 2]

It prints one JSON object with the timings. What the figures include:

- ``job_s``: from ``execute_sql("INSERT INTO ...")`` (job submission) to ``wait()``
  returning: planning and submission, the per-job local cluster start, reading and
  parsing the CSV file, event-time watermarks, the tumbling-window aggregation and
  writing the result rows to CSV files.
- ``empty_job_s``: the same job over an empty file, i.e. the fixed cost per job;
  ``job_s - empty_job_s`` is the figure with job start excluded.
- ``source_s``: a job that only reads and parses the input (its row count goes to a
  blackhole sink): how much of ``job_s`` the CSV source takes.

Excluded: JVM and gateway start, and a warm-up job over a small file that loads the
planner's classes (both happen before the first measured job).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "Apache Flink is not installed: pip install apache-flink (Java 11+ needed), "
    "or point --flink-python at an interpreter that has it"
)

SOURCE = """CREATE TEMPORARY TABLE {name} (
  device_id STRING,
  ts_ms BIGINT,
  temperature DOUBLE,
  status STRING,
  ts AS TO_TIMESTAMP_LTZ(ts_ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv')"""
SINK = """CREATE TEMPORARY TABLE {name} (
  device_id STRING,
  window_start TIMESTAMP(3),
  window_end TIMESTAMP(3),
  n BIGINT,
  avg_temp DOUBLE,
  max_temp DOUBLE
) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv')"""
QUERY = """INSERT INTO {sink}
SELECT device_id, window_start, window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp
FROM TABLE(TUMBLE(TABLE {source}, DESCRIPTOR(ts), INTERVAL '1' MINUTE)){where}
GROUP BY device_id, window_start, window_end"""
FILTER = "\nWHERE status <> 'error'"
COUNT_SINK = """CREATE TEMPORARY TABLE {name} (n BIGINT) WITH ('connector' = 'blackhole')"""


class FlinkRunner:
    """One streaming ``TableEnvironment``; each ``run`` is one timed job."""

    def __init__(self, parallelism: int) -> None:
        from pyflink.table import EnvironmentSettings, TableEnvironment

        self.env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
        config = self.env.get_config()
        config.set("parallelism.default", str(parallelism))
        config.set("table.local-time-zone", "UTC")
        self._n = 0

    def _table(self, template: str, **kw: str) -> str:
        self._n += 1
        name = f"t{self._n}"
        self.env.execute_sql(template.format(name=name, **kw))
        return name

    def window_job(self, input_csv: Path, output_dir: Path, where: str) -> float:
        source = self._table(SOURCE, path=str(input_csv))
        sink = self._table(SINK, path=str(output_dir))
        sql = QUERY.format(sink=sink, source=source, where=where)
        return _timed(lambda: self.env.execute_sql(sql).wait())

    def source_job(self, input_csv: Path) -> float:
        source = self._table(SOURCE, path=str(input_csv))
        sink = self._table(COUNT_SINK)
        sql = f"INSERT INTO {sink} SELECT 1 FROM {source}"
        return _timed(lambda: self.env.execute_sql(sql).wait())


def _timed(job: Any) -> float:
    started = time.perf_counter()
    job()
    return time.perf_counter() - started


def run(
    input_csv: Path, output_dir: Path, parallelism: int, where: str, source: bool
) -> dict[str, float]:
    started = time.perf_counter()
    flink = FlinkRunner(parallelism)
    with tempfile.TemporaryDirectory(prefix="hw-flink-") as tmp:
        small, empty = Path(tmp) / "small.csv", Path(tmp) / "empty.csv"
        lines = input_csv.open().readlines()[:1000]
        small.write_text("".join(lines))
        empty.write_text("")
        flink.window_job(small, Path(tmp) / "warm", where)  # loads the planner's classes
        jvm_s = time.perf_counter() - started
        empty_s = flink.window_job(empty, Path(tmp) / "empty-out", where)
    job_s = flink.window_job(input_csv, output_dir, where)
    out = {"jvm_and_warmup_s": jvm_s, "empty_job_s": empty_s, "job_s": job_s}
    if source:
        out["source_s"] = flink.source_job(input_csv)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--filter", action="store_true", help="add WHERE status <> 'error'")
    ap.add_argument("--source-job", action="store_true", help="also time a read-only job")
    args = ap.parse_args()
    try:
        import pyflink  # noqa: F401
    except ImportError:
        print(json.dumps({"error": INSTALL_HINT}))
        return
    where = FILTER if args.filter else ""
    result = run(
        args.input.resolve(), args.output.resolve(), args.parallelism, where, args.source_job
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
