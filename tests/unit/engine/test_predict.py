"""predict(...) in pipelines: the model stage scores like the scikit-learn model it came from."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pyarrow as pa
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeRegressor

from headwater.engine import Pipeline
from headwater.engine.models import InMemoryModels, OnnxModel
from headwater.errors import BadRequest

SCHEMA = pa.schema(
    [("device_id", pa.string()), ("temperature", pa.float64()), ("humidity", pa.float64()),
     ("status", pa.string())]
)  # fmt: skip


def training(seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(20, 5, n), rng.uniform(0, 100, n)]).astype(np.float32)
    return x, (x[:, 0] / 5 + x[:, 1] / 40 + rng.normal(0, 1, n) > 6).astype(np.int64)


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    x, y = training(1)
    clf = LogisticRegression().fit(x, y)
    reg = DecisionTreeRegressor(max_depth=5, random_state=0).fit(x, x[:, 0] * 1.5 - x[:, 1] / 10)
    models = InMemoryModels()
    onx = to_onnx(clf, x[:1], options={"zipmap": False})
    models.add(OnnxModel.from_bytes("clf", 1, onx.SerializeToString()))
    models.add(OnnxModel.from_bytes("reg", 1, to_onnx(reg, x[:1]).SerializeToString()))
    models.add(OnnxModel.from_bytes("zip", 1, to_onnx(clf, x[:1]).SerializeToString()))
    models.add(OnnxModel.from_bytes("lookup", 1, lookup_model()))
    return {"clf": clf, "reg": reg, "models": models}


def lookup_model() -> bytes:
    """y = table[int(x)] for a table of 4 values: rows with x outside 0..3 make it fail."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [4], [10.0, 11.0, 12.0, 13.0])
    nodes = [
        helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
        helper.make_node("Gather", ["table", "i"], ["y"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "lookup", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])], [table],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def readings(seed: int, n: int) -> pa.Table:
    x, _ = training(seed, n)
    return pa.table({
        "device_id": [f"d{i % 7}" for i in range(n)],
        "temperature": x[:, 0].astype(np.float64), "humidity": x[:, 1].astype(np.float64),
        "status": ["ok"] * n,
    })  # fmt: skip


def features(batch: pa.Table) -> np.ndarray:
    return np.column_stack([batch["temperature"].to_numpy(), batch["humidity"].to_numpy()]).astype(
        np.float32
    )


def run(sql: str, fitted: dict[str, Any], batch: pa.Table) -> Any:
    p = Pipeline.from_sql(f"CREATE PIPELINE s AS {sql}", SCHEMA, models=fitted["models"])
    return p, p.process(batch, now_ms=0)


def test_scores_equal_the_scikit_learn_models(fitted: dict[str, Any]) -> None:
    batch = readings(2, 500)
    sql = ("SELECT device_id, predict('clf', temperature, humidity) AS label, "
           "predict_proba('clf', temperature, humidity) AS p, "
           "predict('reg', temperature, humidity / 1) AS y FROM readings")  # fmt: skip
    p, out = run(sql, fitted, batch)
    rows = out.appends
    x = features(batch)
    assert rows["label"].to_pylist() == fitted["clf"].predict(x).tolist()
    np.testing.assert_allclose(
        rows["p"].to_numpy(), fitted["clf"].predict_proba(x)[:, 1], atol=1e-5
    )
    np.testing.assert_allclose(rows["y"].to_numpy(), fitted["reg"].predict(x), rtol=1e-5, atol=1e-4)
    assert p.output_schema.field("p").type == pa.float32()
    assert p.output_schema.names == ["device_id", "label", "p", "y"]


def test_a_named_output_of_several_values_is_a_list(fitted: dict[str, Any]) -> None:
    batch = readings(5, 50)
    sql = ("SELECT predict('clf:probabilities', temperature, humidity) AS ps, "
           "predict('clf:probabilities', temperature, humidity)[2] AS p1 FROM readings")  # fmt: skip
    p, out = run(sql, fitted, batch)
    want = fitted["clf"].predict_proba(features(batch))
    np.testing.assert_allclose(np.array(out.appends["ps"].to_pylist()), want, atol=1e-5)
    np.testing.assert_allclose(out.appends["p1"].to_numpy(), want[:, 1], atol=1e-5)
    assert p.output_schema.field("ps").type == pa.list_(pa.float32())


def test_a_score_filters_rows_and_star_hides_the_score_columns(fitted: dict[str, Any]) -> None:
    batch = readings(3, 300)
    sql = "SELECT * FROM readings WHERE predict_proba('clf', temperature, humidity) > 0.5"
    p, out = run(sql, fitted, batch)
    want = fitted["clf"].predict_proba(features(batch))[:, 1] > 0.5
    assert out.appends.num_rows == int(want.sum()) > 0
    assert p.output_schema.names == SCHEMA.names


def test_a_null_argument_scores_null(fitted: dict[str, Any]) -> None:
    batch = pa.table({"device_id": ["a", "b"], "temperature": [None, 25.0],
                      "humidity": [50.0, 50.0], "status": ["ok", "ok"]})  # fmt: skip
    _, out = run("SELECT predict('reg', temperature, humidity) AS y FROM readings", fitted, batch)
    y = out.appends["y"].to_pylist()
    assert y[0] is None
    assert y[1] == pytest.approx(
        float(fitted["reg"].predict(np.float32([[25.0, 50.0]]))[0]), rel=1e-5
    )


def test_rows_the_model_or_an_argument_fails_on_go_to_the_error_table(
    fitted: dict[str, Any],
) -> None:
    batch = pa.table({"device_id": ["a", "b", "c", "d"], "temperature": [0.0, 9.0, 3.0, 1.0],
                      "humidity": [0.0] * 4, "status": ["0", "0", "0", "x1"]})  # fmt: skip
    sql = ("SELECT device_id, predict('lookup', temperature) AS v, "
           "predict('reg', temperature, CAST(status AS DOUBLE)) AS w FROM readings")  # fmt: skip
    _, out = run(sql, fitted, batch)
    assert out.appends["device_id"].to_pylist() == ["a", "c"]
    assert out.appends["v"].to_pylist() == [10.0, 13.0]
    errors = {r["device_id"]: r["_error"] for r in out.errors.to_pylist()}
    assert set(errors) == {"b", "d"}
    assert "lookup" in errors["b"] and "x1" in errors["d"]


def test_error_rows_of_a_later_stage_have_the_streams_columns(fitted: dict[str, Any]) -> None:
    batch = pa.table({"device_id": ["a", "b"], "temperature": [1.0, 2.0], "humidity": [0.0, 0.0],
                      "status": ["7", "x"]})  # fmt: skip
    sql = ("SELECT device_id, predict('lookup', temperature) + CAST(status AS INTEGER) AS v "
           "FROM readings")  # fmt: skip
    p, out = run(sql, fitted, batch)
    assert out.appends.to_pylist() == [{"device_id": "a", "v": 18.0}]
    assert out.errors.schema.names == p.error_schema.names
    assert out.errors["device_id"].to_pylist() == ["b"]


def test_scores_feed_anomaly_functions(fitted: dict[str, Any]) -> None:
    schema = SCHEMA.append(pa.field("ts", pa.timestamp("ms", tz="UTC")))
    batch = readings(6, 80)
    batch = batch.append_column("ts", pa.array(np.arange(80) * 1000, pa.timestamp("ms", tz="UTC")))
    over = "OVER (PARTITION BY device_id ORDER BY ts)"
    sql = (f"CREATE PIPELINE a AS SELECT device_id, ts, zscore(predict('reg', temperature, "
           f"humidity), 3) {over} AS z FROM readings")  # fmt: skip
    got = Pipeline.from_sql(sql, schema, models=fitted["models"]).process(batch, 0).appends
    scored = batch.append_column(
        "y", pa.array(fitted["reg"].predict(features(batch)), pa.float32())
    )
    oracle = (
        Pipeline.from_sql(
            f"CREATE PIPELINE o AS SELECT device_id, ts, zscore(y, 3) {over} AS z FROM readings",
            scored.schema,
        )
        .process(scored, 0)
        .appends
    )
    want = [np.nan if z is None else z for z in oracle.sort_by("ts")["z"].to_pylist()]
    have = [np.nan if z is None else z for z in got.sort_by("ts")["z"].to_pylist()]
    assert have == pytest.approx(want, rel=1e-6, nan_ok=True)
    assert got["z"].null_count < got.num_rows


def test_scores_can_be_aggregated_in_windows(fitted: dict[str, Any]) -> None:
    schema = SCHEMA.append(pa.field("ts", pa.timestamp("ms", tz="UTC")))
    batch = readings(4, 120)
    batch = batch.append_column("ts", pa.array(np.arange(120) * 1000, pa.timestamp("ms", tz="UTC")))
    sql = ("CREATE PIPELINE w AS SELECT window_start, avg(predict('reg', temperature, humidity)) "
           "AS y FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY window_start, window_end "
           "HAVING max(predict('reg', temperature, humidity)) > -1000")  # fmt: skip
    p = Pipeline.from_sql(sql, schema, models=fitted["models"])
    out = p.process(batch, 0).then(p.finish(0), key=p.output_key)
    got = sorted((r["window_start"].timestamp(), r["y"]) for r in out.upserts.to_pylist())
    y = fitted["reg"].predict(features(batch))
    assert [g[1] for g in got] == pytest.approx([y[:60].mean(), y[60:].mean()], rel=1e-5)


@pytest.mark.parametrize(
    ("sql", "code", "words"),
    [
        ("SELECT predict('nope', temperature) FROM readings", "unknown_model", "'nope'"),
        ("SELECT predict('clf@2', temperature, humidity) FROM readings", "unknown_model", "2"),
        ("SELECT predict('clf', temperature) FROM readings", "bad_predict_call", "takes 2"),
        ("SELECT predict('clf:nope', temperature, humidity) FROM readings",
         "unknown_model_output", "probabilities"),
        ("SELECT predict_proba('zip', temperature, humidity) FROM readings",
         "unsupported_model_output", "zipmap"),
        ("SELECT predict_proba('reg', temperature, humidity) FROM readings",
         "bad_predict_call", "[N, 2]"),
        ("SELECT predict(device_id, temperature) FROM readings", "unsupported_sql", "string literal"),
        ("SELECT predict('reg', predict('reg', temperature, humidity), humidity) FROM readings",
         "unsupported_sql", "inside"),
        ("SELECT predict('reg', temperature, pressure + 1) FROM readings",
         "query_error", "pressure"),
    ],
)  # fmt: skip
def test_mistakes_are_400s_that_say_what_to_fix(
    fitted: dict[str, Any], sql: str, code: str, words: str
) -> None:
    with pytest.raises(BadRequest) as info:
        Pipeline.from_sql(f"CREATE PIPELINE s AS {sql}", SCHEMA, models=fitted["models"])
    assert info.value.code == code, str(info.value)
    assert words.lower() in str(info.value).lower()
