"""The model registry: ONNX models a tenant uploads for ``predict(...)`` in pipelines.

A model is stored as ``<data_dir>/models/<tenant>/<name>/<version>.onnx`` (written to a
temporary file, synced, then renamed) and described in the catalog: inputs and outputs
read from its graph, size, sha256. Uploading a name again adds a version. An upload is
checked by loading it in onnxruntime, which parses ONNX protobuf only: nothing is ever
unpickled, and a graph using operators onnxruntime does not have (custom-op domains)
is refused. Loaded sessions are cached and shared by the pipelines using them.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any

from headwater.catalog.sqlite import Catalog
from headwater.engine.models import Model, OnnxModel, describe, load_session
from headwater.errors import BadRequest, Conflict, NotFound
from headwater.model.time import ms_to_datetime

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


class ModelRegistry:
    def __init__(self, catalog: Catalog, data_dir: Path) -> None:
        self._catalog = catalog
        self._root = data_dir / "models"
        self._loaded: dict[tuple[str, str, int], OnnxModel] = {}
        self._lock = threading.Lock()

    def upload(self, tenant: str, name: str, data: bytes, now_ms: int) -> dict[str, Any]:
        if not NAME.match(name):
            raise BadRequest(
                f"model name {name!r} is not valid: use letters, digits, '_', '.' and '-' "
                "(64 at most), starting with a letter or '_'", code="invalid_model_name",
            )  # fmt: skip
        try:
            session = load_session(data)
        except Exception as exc:
            raise BadRequest(
                f"the upload is not an ONNX model onnxruntime can run: {str(exc)[:500]}; "
                "send the bytes of a .onnx file (for scikit-learn models, export with skl2onnx)",
                code="invalid_model",
            ) from exc
        spec = {
            "inputs": describe(session.get_inputs()),
            "outputs": describe(session.get_outputs()),
            "size_bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        version = self._catalog.add_model_version(tenant, name, spec, now_ms)
        try:
            self._write(self._path(tenant, name, version), data)
        except BaseException:
            self._catalog.drop_model_version(tenant, name, version)
            raise
        with self._lock:
            self._loaded[(tenant, name, version)] = OnnxModel(name, version, session)
        return self.describe(tenant, name)

    def all(self, tenant: str) -> list[dict[str, Any]]:
        names = sorted({n for n, *_ in self._catalog.model_versions(tenant)})
        return [self.describe(tenant, n) for n in names]

    def describe(self, tenant: str, name: str) -> dict[str, Any]:
        versions = self._catalog.model_versions(tenant, name)
        if not versions:
            raise NotFound(f"model {name!r} does not exist; upload it with POST /v1/models?name={name}",
                           code="unknown_model")  # fmt: skip
        rows = [
            {"version": v, **spec, "created_at": ms_to_datetime(created)}
            for _, v, spec, created in versions
        ]
        return {"name": name, **rows[-1], "versions": rows,
                "used_by": self._catalog.model_users(tenant, name)}  # fmt: skip

    def delete(self, tenant: str, name: str) -> None:
        self.describe(tenant, name)
        users = self._catalog.model_users(tenant, name)
        if users:
            raise Conflict(
                f"model {name!r} is used by pipeline(s) {', '.join(users)}; drop them first",
                code="model_in_use",
            )
        self._catalog.drop_model(tenant, name)
        with self._lock:
            for key in [k for k in self._loaded if k[:2] == (tenant, name)]:
                del self._loaded[key]
        folder = self._root / tenant / name
        for f in folder.glob("*.onnx"):
            f.unlink(missing_ok=True)
        if folder.exists():
            folder.rmdir()

    def versions(self, tenant: str, name: str) -> list[int]:
        return [v for _, v, *_ in self._catalog.model_versions(tenant, name)]

    def latest(self, tenant: str, name: str) -> int:
        versions = self.versions(tenant, name)
        if not versions:
            raise NotFound(f"model {name!r} does not exist; upload it with POST /v1/models?name={name}",
                           code="unknown_model")  # fmt: skip
        return versions[-1]

    def load(self, tenant: str, name: str, version: int) -> OnnxModel:
        key = (tenant, name, version)
        with self._lock:
            hit = self._loaded.get(key)
        if hit is not None:
            return hit
        model = OnnxModel.from_bytes(name, version, self.read(tenant, name, version))
        with self._lock:
            return self._loaded.setdefault(key, model)

    def read(self, tenant: str, name: str, version: int) -> bytes:
        """The ONNX bytes of one version (what a pipeline worker loads the model from)."""
        path = self._path(tenant, name, version)
        if not path.exists():
            raise NotFound(f"model {name!r} has no version {version}", code="unknown_model")
        return path.read_bytes()

    def _path(self, tenant: str, name: str, version: int) -> Path:
        return self._root / tenant / name / f"{version}.onnx"

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".onnx.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class TenantModels:
    """The engine's ``Models`` port for one pipeline: versions pinned when it was created.

    ``pins`` holds the versions used; a model named without a version and not pinned yet
    gets its latest version, pinned from then on.
    """

    def __init__(self, registry: ModelRegistry, tenant: str, pins: dict[str, int]) -> None:
        self._registry = registry
        self._tenant = tenant
        self.pins = dict(pins)

    def get(self, name: str, version: int | None) -> Model:
        version = self.resolve(name, version)
        return self._registry.load(self._tenant, name, version)

    def read(self, name: str, version: int | None) -> tuple[int, bytes]:
        """The version ``get`` would use, and its ONNX bytes (for a pipeline worker)."""
        version = self.resolve(name, version)
        return version, self._registry.read(self._tenant, name, version)

    def resolve(self, name: str, version: int | None) -> int:
        """The version a call means, pinned from now on: ``version``, or the pinned one, or
        the latest."""
        if version is None:
            version = self.pins.get(name) or self._registry.latest(self._tenant, name)
        if version not in self._registry.versions(self._tenant, name):
            raise NotFound(
                f"model {name!r} has no version {version}; see GET /v1/models/{name}",
                code="unknown_model",
            )
        self.pins.setdefault(name, version)
        return version
