"""Model scoring through a real server: upload an ONNX model, score a stream with it."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeRegressor

from serverproc import Server

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC).timestamp()
STREAM = {
    "name": "climate",
    "fields": [
        {"name": "device_id", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "temperature", "type": "float"},
        {"name": "humidity", "type": "float"},
        {"name": "event_id", "type": "string"},
    ],
    "event_time": "ts",
    "id": "event_id",
}
OCTETS = {"Content-Type": "application/octet-stream"}


def wait_for(fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def events(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {"device_id": f"d{i % 5}",
         "ts": datetime.fromtimestamp(T0 + i, UTC).isoformat().replace("+00:00", "Z"),
         "temperature": round(float(rng.normal(20, 5)), 3),
         "humidity": round(float(rng.uniform(0, 100)), 3), "event_id": f"e{i}"}
        for i in range(n)
    ]  # fmt: skip


def models() -> tuple[LogisticRegression, bytes, DecisionTreeRegressor, bytes]:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(20, 5, 500), rng.uniform(0, 100, 500)]).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] / 5 + x[:, 1] / 40 > 6).astype(np.int64))
    reg = DecisionTreeRegressor(max_depth=6, random_state=0).fit(x, x[:, 0] * 2 + x[:, 1] / 7)
    clf_onnx = to_onnx(clf, x[:1], options={"zipmap": False}).SerializeToString()
    return clf, clf_onnx, reg, to_onnx(reg, x[:1]).SerializeToString()


def rows(c: httpx.Client, table: str, n: int) -> list[dict[str, Any]] | None:
    got = c.get(f"/v1/tables/{table}/rows", params={"limit": 10_000}).json().get("rows", [])
    return got if len(got) >= n else None


def test_a_pipeline_scores_every_row_as_the_model_does(server: Server) -> None:
    clf, clf_onnx, reg, reg_onnx = models()
    sent = events(300, 1)
    with server.client() as c:
        r = c.post("/v1/models", params={"name": "risk"}, content=clf_onnx, headers=OCTETS)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["version"] == 1 and body["inputs"][0]["shape"] == [None, 2]
        assert [o["name"] for o in body["outputs"]] == ["label", "probabilities"]
        assert len(body["sha256"]) == 64 and body["size_bytes"] == len(clf_onnx)
        assert c.post("/v1/models", params={"name": "heat"}, content=reg_onnx,
                      headers=OCTETS).status_code == 201  # fmt: skip
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        sql = ("CREATE PIPELINE scored AS SELECT device_id, event_id, "
               "predict('risk', temperature, humidity) AS label, "
               "predict_proba('risk', temperature, humidity) AS p, "
               "predict('heat', temperature, humidity) AS heat FROM climate")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        body = b"\n".join(orjson.dumps(e) for e in sent)
        r = c.post("/v1/streams/climate/events", content=body,
                   headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert r.json()["accepted"] == len(sent), r.text
        got = wait_for(lambda: rows(c, "scored", len(sent)))
        assert got is not None and len(got) == len(sent)
        by_id = {g["event_id"]: g for g in got}
        x = np.float32([[e["temperature"], e["humidity"]] for e in sent])
        label, proba, heat = clf.predict(x), clf.predict_proba(x)[:, 1], reg.predict(x)
        for i, e in enumerate(sent):
            g = by_id[e["event_id"]]
            assert g["label"] == label[i], (e, g)
            assert abs(g["p"] - proba[i]) < 1e-5, (e, g)
            assert abs(g["heat"] - heat[i]) < 1e-4 * max(1.0, abs(heat[i])), (e, g)

        described = c.get("/v1/models/risk").json()
        assert described["used_by"] == ["scored"]
        assert [m["name"] for m in c.get("/v1/models").json()] == ["heat", "risk"]
        r = c.delete("/v1/models/risk")
        assert r.status_code == 409 and r.json()["error"]["code"] == "model_in_use", r.text
        assert c.delete("/v1/pipelines/scored").status_code in (200, 204)
        assert c.delete("/v1/models/risk").status_code == 204
        assert c.get("/v1/models/risk").status_code == 404


def test_a_new_version_leaves_running_pipelines_on_theirs(fresh_server: Server) -> None:
    _, clf_onnx, _, reg_onnx = models()
    with fresh_server.client() as c:
        assert c.post("/v1/models", params={"name": "m"}, content=reg_onnx,
                      headers=OCTETS).status_code == 201  # fmt: skip
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        sql = "CREATE PIPELINE v AS SELECT event_id, predict('m', temperature, humidity) AS y FROM climate"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        # version 2 is a classifier: its first output (label) is an integer
        r = c.post("/v1/models", params={"name": "m"}, content=clf_onnx, headers=OCTETS)
        assert r.json()["version"] == 2 and len(r.json()["versions"]) == 2
    fresh_server.kill()
    fresh_server.start()
    with fresh_server.client() as c:
        status = c.get("/v1/pipelines/v").json()
        assert status["status"] == "running", status
        sent = events(20, 2)
        c.post("/v1/streams/climate/events", content=b"\n".join(orjson.dumps(e) for e in sent),
               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        got = wait_for(lambda: rows(c, "v", len(sent)))
        assert got is not None and all(isinstance(g["y"], float) for g in got), got
        sql2 = (
            "CREATE PIPELINE v2 AS SELECT event_id, predict('m@1', temperature) AS y FROM climate"
        )
        r = c.post("/v1/pipelines", json={"sql": sql2})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_predict_call", r.text


def test_uploads_that_are_not_onnx_models_are_refused(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self) -> tuple[Any, ...]:
            return (marker.write_text, ("loaded",))

    with server.client() as c:
        for data in (pickle.dumps(Trap()), b"not a model", b"\x08\x07" * 100):
            r = c.post("/v1/models", params={"name": "bad"}, content=data, headers=OCTETS)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model", r.text
            assert "ONNX" in r.json()["error"]["message"]
        assert not marker.exists()
        assert c.get("/v1/models/bad").status_code == 404
        r = c.post("/v1/models", params={"name": "../x"}, content=b"x", headers=OCTETS)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_model_name"
        r = c.post(
            "/v1/models", params={"name": "x"}, content=b"x", headers={"Content-Type": "text/plain"}
        )
        assert r.status_code == 415
        assert c.post("/v1/streams", json={**STREAM, "name": "ghosts"}).status_code == 201
        r = c.post("/v1/pipelines", json={"sql": "CREATE PIPELINE q AS SELECT predict('ghost', "
                                                 "temperature) AS y FROM ghosts"})  # fmt: skip
        assert r.status_code == 400 and "ghost" in r.json()["error"]["message"], r.text


def lookup_model() -> bytes:
    """y = [10, 11, 12, 13][int(x)]: a row with x outside 0..3 makes the model fail."""
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
    return bytes(model.SerializeToString())


def test_rows_the_model_fails_on_go_to_the_error_table(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/models", params={"name": "lookup"}, content=lookup_model(), headers=OCTETS)
        assert r.status_code == 201, r.text
        assert c.post("/v1/streams", json={**STREAM, "name": "lk"}).status_code == 201
        sql = (
            "CREATE PIPELINE lk_out AS SELECT event_id, predict('lookup', temperature) AS v FROM lk"
        )
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        sent = [
            {**e, "temperature": t} for e, t in zip(events(4, 3), [0.0, 9.0, 3.0, 1.0], strict=True)
        ]
        c.post("/v1/streams/lk/events", content=b"\n".join(orjson.dumps(e) for e in sent),
               headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        got = wait_for(lambda: rows(c, "lk_out", 3))
        assert got is not None
        assert sorted((g["event_id"], g["v"]) for g in got) == [
            ("e0", 10.0),
            ("e2", 13.0),
            ("e3", 11.0),
        ]
        errors = wait_for(lambda: rows(c, "lk_out_errors", 1))
        assert errors is not None and [e["event_id"] for e in errors] == ["e1"]
        assert "lookup" in errors[0]["_error"]
