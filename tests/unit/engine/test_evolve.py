"""Which replacements keep a pipeline's state: plans compared by their state's shape, and
a carried snapshot restores into the new pipeline."""

from __future__ import annotations

import pyarrow as pa
import pytest

from headwater.engine import Pipeline
from headwater.engine.evolve import carry_state, dropped_state, split_reset
from headwater.errors import BadRequest, Conflict

SCHEMA = pa.schema([("k", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")), ("v", pa.float64()),
                    ("id", pa.string())])  # fmt: skip
BASE = ("SELECT k, window_start, count(*) AS n, avg(v) AS a FROM TUMBLE(s, ts, "
        "INTERVAL '1 minute') GROUP BY k, window_start, window_end")  # fmt: skip
Z = "OVER (PARTITION BY k ORDER BY ts)"


def plan(body: str) -> Pipeline:
    return Pipeline.from_sql(f"CREATE PIPELINE p AS {body}", SCHEMA)


@pytest.mark.parametrize(
    "new",
    [
        BASE.replace("AS a", "AS a, avg(v) * 2 AS a2"),  # a new column from existing ones
        BASE.replace("GROUP BY", "WHERE v > 0 GROUP BY"),  # a new filter
        BASE.replace("AS a", "AS mean"),  # a renamed aggregate column
        BASE + " HAVING count(*) > 1 WITH (emit = 'final')",
    ],
)
def test_compatible_changes_keep_the_state(new: str) -> None:
    assert dropped_state(plan(BASE).plan, plan(new).plan) == []


@pytest.mark.parametrize(
    ("old", "new", "what"),
    [
        (BASE, BASE.replace("1 minute", "2 minutes"), "the window (TUMBLE 1 minute becomes TUMBLE 2 minutes)"),
        (BASE, BASE.replace("avg(v)", "max(v)"), "the aggregates"),
        (BASE, BASE.replace("avg(v)", "avg(v + 1)"), "the aggregates"),
        (BASE, BASE.replace("GROUP BY k,", "GROUP BY lower(k),").replace("SELECT k,", "SELECT lower(k) AS k,"), "the GROUP BY keys"),
        (BASE, BASE + " WITH (emit = 'changes')", "emit"),
        (BASE, BASE.replace("TUMBLE(s,", "TUMBLE(DEDUP(s, id, ts, INTERVAL '1 hour'),"), "dedup"),
        (f"SELECT k, zscore(v) {Z} AS z FROM s", f"SELECT k, ewma_zscore(v, 0.2) {Z} AS z FROM s", "the anomaly histories"),
        ("SELECT k, v FROM s", f"SELECT k, zscore(v) {Z} AS z FROM s",
         "the anomaly histories (none becomes welford of v per k in ts order)"),
        (BASE, "SELECT k, v FROM s", "the kind of pipeline (window becomes stateless)"),
    ],
)  # fmt: skip
def test_incompatible_changes_say_what_is_dropped(old: str, new: str, what: str) -> None:
    dropped = dropped_state(plan(old).plan, plan(new).plan)
    assert any(d.startswith(what) for d in dropped), dropped


def test_a_carried_snapshot_restores_into_the_new_pipeline() -> None:
    old, new = plan(BASE), plan(BASE.replace("AS a", "AS a, count(*) + 1 AS n1"))
    rows = pa.table({"k": ["x", "x"], "ts": pa.array([1_000, 2_000], pa.timestamp("ms", tz="UTC")),
                     "v": [1.0, 3.0], "id": ["1", "2"]})  # fmt: skip
    old.process(rows, 0)
    with pytest.raises(Conflict):  # a snapshot belongs to its SQL ...
        new.restore(old.snapshot())
    new.restore(carry_state(old.snapshot(), new.plan.sql))  # ... unless carried over
    out = new.finish(0).upserts
    assert out is not None and out.to_pylist()[0]["n"] == 2 and out.to_pylist()[0]["n1"] == 3


def test_reset_state_is_read_and_removed() -> None:
    sql = f"CREATE PIPELINE p AS {BASE} WITH (reset_state = true, emit = 'final')"
    assert split_reset(sql) == (f"CREATE PIPELINE p AS {BASE} WITH (emit = 'final')", True)
    assert split_reset(f"CREATE PIPELINE p AS {BASE} WITH (reset_state = false)") == (
        f"CREATE PIPELINE p AS {BASE}", False)  # fmt: skip
    with pytest.raises(BadRequest, match="true or false"):
        split_reset(f"CREATE PIPELINE p AS {BASE} WITH (reset_state = 'maybe')")
