"""Python functions in pipeline SQL, and pipelines built in Python: the same plans as SQL."""

from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import headwater
from headwater import Pipeline as Builder
from headwater import avg, count, max_
from headwater.engine import Pipeline, Plan, plan_pipeline
from headwater.engine.udfs import registered

SCHEMA = pa.schema([("device_id", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
                    ("temperature", pa.float64()), ("humidity", pa.float64())])  # fmt: skip


def batch(temps: list[float | None]) -> pa.Table:
    n = len(temps)
    return pa.table({"device_id": [f"d{i % 2}" for i in range(n)],
                     "ts": pa.array([i * 1000 for i in range(n)], pa.timestamp("ms", tz="UTC")),
                     "temperature": pa.array(temps, pa.float64()),
                     "humidity": [50.0] * n}, schema=SCHEMA)  # fmt: skip


@headwater.udf
def hw_test_feels(temperature: float, humidity: float) -> float:
    return pc.add(temperature, pc.multiply(humidity, 0.1))


@headwater.udf(params=["DOUBLE"], returns="DOUBLE")
def hw_test_strict(x: pa.Array) -> pa.Array:
    if pc.any(pc.greater(x, 100)).as_py():
        raise ValueError("too hot to handle")
    return x


def test_a_udf_is_called_per_vector_in_row_expressions_and_aggregates() -> None:
    calls: list[int] = []

    @headwater.udf(name="hw_test_counted")
    def counted(x: float) -> float:
        calls.append(len(x))
        return x

    p = Pipeline.from_sql(
        "CREATE PIPELINE u AS SELECT device_id, window_start, max(hw_test_feels(temperature, "
        "humidity)) AS hi, sum(hw_test_counted(temperature)) AS total FROM TUMBLE(readings, ts, "
        "INTERVAL '1 minute') WHERE hw_test_feels(temperature, humidity) > 10 "
        "GROUP BY device_id, window_start, window_end", SCHEMA)  # fmt: skip
    p.process(batch([1.0, 20.0, 30.0, None, 40.0]), 0)
    got = {r["device_id"]: (r["hi"], r["total"]) for r in p.finish(0).upserts.to_pylist()}
    assert got == {"d0": (45.0, 70.0), "d1": (25.0, 20.0)}  # feels = t + 5; 1 filtered out
    assert calls and max(calls) > 1  # vectors, not rows


def test_rows_a_udf_raises_on_go_to_the_error_table() -> None:
    p = Pipeline.from_sql("CREATE PIPELINE s AS SELECT device_id, hw_test_strict(temperature) "
                          "AS t FROM readings", SCHEMA)  # fmt: skip
    out = p.process(batch([10.0, 200.0, 30.0]), 0)
    assert out.appends["t"].to_pylist() == [10.0, 30.0]
    assert out.errors is not None and "too hot to handle" in out.errors["_error"][0].as_py()


def test_registering_a_name_again_replaces_the_function() -> None:
    sql = "CREATE PIPELINE r AS SELECT hw_test_again(temperature) AS t FROM readings"
    headwater.udf(lambda x: pc.multiply(x, 2), name="hw_test_again", params=["DOUBLE"],
                  returns="DOUBLE")  # fmt: skip
    assert Pipeline.from_sql(sql, SCHEMA).process(batch([1.0]), 0).appends["t"][0].as_py() == 2
    headwater.udf(lambda x: pc.multiply(x, 3), name="hw_test_again", params=["DOUBLE"],
                  returns="DOUBLE")  # fmt: skip
    assert Pipeline.from_sql(sql, SCHEMA).process(batch([1.0]), 0).appends["t"][0].as_py() == 3
    assert "hw_test_again" in registered()


def test_types_come_from_annotations_or_are_asked_for() -> None:
    with pytest.raises(ValueError, match="annotate it"):
        headwater.udf(lambda x: x, name="hw_test_untyped")
    with pytest.raises(ValueError, match="letters"):
        headwater.udf(lambda x: x, name="no-dash", params=["DOUBLE"], returns="DOUBLE")


def bare(plan: Plan) -> Plan:
    """A plan without its text: the statement and where each aggregate was written."""
    aggs = tuple(replace(a, position="") for a in plan.aggregates)
    return replace(plan, sql="", aggregates=aggs)


def same_plan(built: Builder, sql: str) -> bool:
    return bare(built.plan()) == bare(plan_pipeline(sql))


@pytest.mark.parametrize(
    ("built", "sql"),
    [
        (Builder("m").source("readings").tumble("ts", "1 minute").group_by("device_id")
         .agg(n=count(), avg_temp=avg("temperature")),
         "CREATE PIPELINE m AS\nSELECT device_id, window_start, window_end, count(*) AS n,\n"
         "       avg(temperature) AS avg_temp\nFROM TUMBLE(readings, ts, INTERVAL '1 minute')\n"
         "GROUP BY device_id, window_start, window_end"),
        (Builder("h").source("readings").where("temperature > 30")
         .select("device_id", f="temperature * 1.8 + 32"),
         "CREATE PIPELINE h AS SELECT device_id, temperature * 1.8 + 32 AS f FROM readings "
         "WHERE temperature > 30"),
        (Builder("t").source("readings").group_by("device_id").agg(hi=max_("temperature"))
         .options(emit="changes"),
         "CREATE PIPELINE t AS SELECT device_id, max(temperature) AS hi FROM readings "
         "GROUP BY device_id WITH (emit = 'changes')"),
    ],
)  # fmt: skip
def test_a_built_pipeline_has_the_plan_of_its_sql(built: Builder, sql: str) -> None:
    assert same_plan(built, sql)
    assert (
        Pipeline(built.plan(), SCHEMA).output_schema == Pipeline.from_sql(sql, SCHEMA).output_schema
    )


def test_a_built_pipeline_without_a_source_says_so() -> None:
    with pytest.raises(ValueError, match="no source"):
        Builder("x").select("a").plan()
