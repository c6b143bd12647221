"""The model registry: ONNX files checked by onnxruntime, versioned, pinned, deleted."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx import TensorProto, helper

from headwater.catalog.sqlite import Catalog
from headwater.errors import BadRequest, Conflict, NotFound
from headwater.pipelines.models import ModelRegistry, TenantModels


def graph_model(op: str = "Relu", domain: str = "") -> bytes:
    node = helper.make_node(op, ["x"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return bytes(model.SerializeToString())


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(Catalog(tmp_path / "catalog.sqlite"), tmp_path)


def test_versions_are_numbered_stored_and_described(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    first = registry.upload("t", "relu", graph_model(), 1_000)
    assert first["version"] == 1 and first["inputs"] == [
        {"name": "x", "type": "tensor(float)", "shape": [None, 1]}
    ]
    second = registry.upload("t", "relu", graph_model("Abs"), 2_000)
    assert second["version"] == 2 and [v["version"] for v in second["versions"]] == [1, 2]
    assert (tmp_path / "models" / "t" / "relu" / "2.onnx").read_bytes() == graph_model("Abs")
    assert not list((tmp_path / "models").rglob("*.tmp"))
    assert registry.all("other") == []
    fresh = ModelRegistry(Catalog(tmp_path / "catalog.sqlite"), tmp_path)  # after a restart
    assert fresh.load("t", "relu", 1).session.run(None, {"x": [[-2.0]]})[0].tolist() == [[0.0]]


def test_custom_op_domains_and_non_models_are_refused(registry: ModelRegistry) -> None:
    for data in (graph_model("Mystery", "com.example.ops"), b"\x80\x04K\x01.", b""):
        with pytest.raises(BadRequest) as info:
            registry.upload("t", "m", data, 0)
        assert info.value.code == "invalid_model"
    with pytest.raises(NotFound):
        registry.describe("t", "m")


def test_pins_keep_a_pipeline_on_its_version_and_guard_deletion(registry: ModelRegistry) -> None:
    registry.upload("t", "relu", graph_model(), 0)
    models = TenantModels(registry, "t", {})
    assert models.get("relu", None).version == 1
    registry.upload("t", "relu", graph_model("Abs"), 0)
    assert models.get("relu", None).version == 1 and models.pins == {"relu": 1}
    assert TenantModels(registry, "t", {}).get("relu", None).version == 2
    registry._catalog.set_pipeline_models("t", "p", models.pins)
    with pytest.raises(Conflict) as info:
        registry.delete("t", "relu")
    assert info.value.code == "model_in_use" and "p" in str(info.value)
    registry._catalog.set_pipeline_models("t", "p", {})
    registry.delete("t", "relu")
    with pytest.raises(NotFound):
        models.get("relu", None)
