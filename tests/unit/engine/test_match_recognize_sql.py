"""MATCH_RECOGNIZE pipelines: planning, errors, and the operator over micro-batches."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest

from headwater.engine import Pipeline, plan_pipeline
from headwater.errors import BadRequest, QueryError, UnsupportedSQL
from pattern_reference import reference_matches

SCHEMA = pa.schema(
    [("device_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")), ("v", pa.int64())]
)


def sql(
    skip: str = "PAST LAST ROW",
    within: str = "WITHIN INTERVAL '1' MINUTE",
    options: str = "WITH (watermark_delay = '5 seconds')",
    pattern: str = "A B+ C",
) -> str:
    return f"""CREATE PIPELINE runs AS
SELECT * FROM s MATCH_RECOGNIZE (
  PARTITION BY device_id ORDER BY ts
  MEASURES FIRST(A.ts) AS start_ts, COUNT(B.*) AS rises, LAST(C.v) AS drop_to
  ONE ROW PER MATCH
  AFTER MATCH SKIP {skip}
  PATTERN ({pattern}) {within}
  DEFINE B AS B.v > PREV(B.v), C AS C.v < PREV(C.v)
) AS m
{options}"""


@pytest.mark.parametrize(
    ("skip", "kind", "to"),
    [
        ("PAST LAST ROW", "past_last_row", None),
        ("TO NEXT ROW", "to_next_row", None),
        ("TO FIRST B", "to_first", "B"),
        ("TO LAST b", "to_last", "B"),
    ],
)
def test_plan_reads_every_skip_mode(skip: str, kind: str, to: str | None) -> None:
    plan = plan_pipeline(sql(skip))
    assert plan.kind == "pattern" and plan.pattern is not None
    assert (plan.pattern.skip, plan.pattern.skip_to) == (kind, to)
    assert plan.pattern.partition_by == ("device_id",) and plan.pattern.order_by == "ts"
    assert [m[0] for m in plan.pattern.measures] == ["start_ts", "rises", "drop_to"]
    assert plan.time_column == "ts" and plan.output_key == ()


@pytest.mark.parametrize(
    ("within", "ms"),
    [("WITHIN INTERVAL '5' MINUTE", 300_000), ("WITHIN INTERVAL '30 seconds'", 30_000)],
)
def test_within_forms(within: str, ms: int) -> None:
    plan = plan_pipeline(sql(within=within))
    assert plan.pattern is not None and plan.pattern.within_ms == ms


def test_without_within_needs_a_cap() -> None:
    with pytest.raises(UnsupportedSQL, match="max_partial_matches"):
        plan_pipeline(sql(within=""))
    plan = plan_pipeline(sql(within="", options="WITH (max_partial_matches = '500')"))
    assert plan.pattern is not None and plan.pattern.max_partial_matches == 500
    with pytest.raises(BadRequest, match="positive whole number"):
        plan_pipeline(sql(within="", options="WITH (max_partial_matches = 'lots')"))


def test_pattern_error_names_line_and_column() -> None:
    with pytest.raises(BadRequest, match=r"line 7, column 17: PATTERN column 6: missing"):
        plan_pipeline(sql(pattern="A B+ (C"))


@pytest.mark.parametrize(
    ("edit", "error", "words"),
    [
        (("SELECT *", "SELECT device_id, count(*)"), UnsupportedSQL, "GROUP"),
        (("ORDER BY ts", "ORDER BY ts DESC"), UnsupportedSQL, "ascending ORDER BY"),
        (("ONE ROW PER MATCH", "ALL ROWS PER MATCH"), UnsupportedSQL, "ALL ROWS PER MATCH"),
        (("C.v < PREV(C.v)", "C.v < NEXT(C.v)"), QueryError, "NEXT"),
        (("C.v < PREV(C.v)", "Z.v < 1"), QueryError, "no pattern variable Z"),
        (("LAST(C.v) AS", "LAST(C.nope) AS"), QueryError, "no column 'nope'"),
    ],
)
def test_refusals_say_what_to_fix(edit: tuple[str, str], error: type, words: str) -> None:
    text = sql().replace(*edit)
    if "GROUP" in words:
        text = text.replace(") AS m\n", ") AS m GROUP BY device_id\n")
    with pytest.raises(error, match=words):
        Pipeline.from_sql(text, SCHEMA)


def events(n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"device_id": f"d{i % 2}", "ts": 1_000 * i, "v": rng.randint(0, 4)} for i in range(n)]


def expected(rows: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    conds = {
        "B": lambda r, i, v, lab: i > 0 and r[i]["v"] > r[i - 1]["v"],
        "C": lambda r, i, v, lab: i > 0 and r[i]["v"] < r[i - 1]["v"],
    }
    out = []
    for d in ("d0", "d1"):
        mine = [{**r, "t": r["ts"]} for r in rows if r["device_id"] == d]
        for m in reference_matches("A B+ C", mine, conds, within=60_000):
            out.append((d, mine[m[0][0]]["ts"], sum(1 for _, v in m if v == "B")))
    return sorted(out)


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def summary(out: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    return sorted((r["device_id"], int(r["start_ts"].timestamp() * 1000), r["rises"]) for r in out)


def test_out_of_order_rows_within_the_delay_are_sorted_and_state_survives_restore() -> None:
    rows = events(200, 3)
    shuffled = rows[:]
    rng = random.Random(1)
    for i in range(0, len(shuffled) - 3, 3):  # disorder within 3 seconds (the delay is 5)
        chunk = shuffled[i : i + 3]
        rng.shuffle(chunk)
        shuffled[i : i + 3] = chunk
    p = Pipeline.from_sql(sql(), SCHEMA)
    out: list[dict[str, Any]] = []
    for k in range(0, len(shuffled), 37):
        step = p.process(table(shuffled[k : k + 37]), now_ms=0)
        out += step.appends.to_pylist() if step.appends is not None else []
        if k == 74:
            again = Pipeline.from_sql(sql(), SCHEMA)
            again.restore(p.snapshot())
            p = again
    assert p.status()["buffered_rows"] > 0  # the last rows wait for the watermark
    final = p.finish(now_ms=0)
    out += final.appends.to_pylist() if final.appends is not None else []
    assert summary(out) == expected(rows)
    assert len(out) >= 20


def test_rows_behind_the_watermark_are_late_and_idle_time_releases_matches() -> None:
    text = sql(options="WITH (watermark_delay = '5 seconds', idle_timeout = '10 seconds')")
    p = Pipeline.from_sql(text, SCHEMA)
    rows = [{"device_id": "d0", "ts": t * 1000, "v": v} for t, v in enumerate([1, 2, 3, 1])]
    assert p.process(table(rows), now_ms=0).appends is None  # the last rows wait
    late = p.process(table([{"device_id": "d0", "ts": -5_000, "v": 9}]), now_ms=1_000).late
    assert late is not None and late.column("_reason").to_pylist() == ["behind_watermark"]
    out = p.on_time(now_ms=60_000).appends
    assert out is not None and out.column("rises").to_pylist() == [2]
