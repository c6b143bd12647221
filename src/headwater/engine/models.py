"""The ``Models`` port: ONNX models a pipeline scores rows with (``predict('m', a, b)``).

A model is an ONNX graph run by onnxruntime, never a pickle. ``OnnxModel.bind`` checks
a call against the graph (how many arguments, which output) and returns a ``Scorer``
that turns argument columns into one result column, once per micro-batch.

Tabular models take either one input of shape ``[N, k]`` (one argument per column, as
scikit-learn models exported by skl2onnx do) or ``k`` inputs of shape ``[N]``/``[N, 1]``.
An output of shape ``[N]`` or ``[N, 1]`` gives one value per row, ``[N, c]`` a list of
``c`` values; ``predict_proba`` gives column 1 of a ``[N, 2]`` output (the probability
of the positive class of a binary classifier). Rows with a null argument score null.

onnxruntime is imported only when a model is loaded, so a server without models never
pays for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from headwater.errors import BadRequest, NotFound

# ONNX tensor element types we read and write, with their Arrow and DuckDB names
TYPES: dict[str, tuple[pa.DataType, str]] = {
    "tensor(float)": (pa.float32(), "FLOAT"),
    "tensor(double)": (pa.float64(), "DOUBLE"),
    "tensor(int64)": (pa.int64(), "BIGINT"),
    "tensor(int32)": (pa.int32(), "INTEGER"),
    "tensor(bool)": (pa.bool_(), "BOOLEAN"),
    "tensor(string)": (pa.string(), "VARCHAR"),
}
ZIPMAP_HINT = (
    "export the classifier without ZipMap: skl2onnx to_onnx(..., options={'zipmap': False})"
)


Failures = list[tuple[int, str]]  # (row index, message) of rows the model failed on


class Scorer(Protocol):
    @property
    def type(self) -> pa.DataType:
        """The result column's type."""
        ...

    @property
    def arg_types(self) -> tuple[str, ...]:
        """The DuckDB type each argument is cast to."""
        ...

    def run(self, args: Sequence[pa.Array]) -> tuple[pa.Array, Failures]:
        """One result per row (null where it failed), and the rows the model failed on."""
        ...


class Model(Protocol):
    name: str
    version: int

    def bind(self, n_args: int, output: str | None, proba: bool) -> Scorer: ...


class Models(Protocol):
    def get(self, name: str, version: int | None) -> Model:
        """Model ``name`` at ``version`` (the pinned or latest when None); ``NotFound``."""
        ...


def load_session(data: bytes) -> Any:
    """An onnxruntime session over ONNX bytes, one thread; raises on anything invalid."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def describe(args: Sequence[Any]) -> list[dict[str, Any]]:
    """Inputs or outputs of a session as JSON: name, ONNX type, shape (None: any size)."""
    return [
        {
            "name": a.name,
            "type": a.type,
            "shape": [d if isinstance(d, int) else None for d in a.shape],
        }
        for a in args
    ]


class OnnxModel:
    def __init__(self, name: str, version: int, session: Any) -> None:
        self.name = name
        self.version = version
        self.session = session
        self.inputs = describe(session.get_inputs())
        self.outputs = describe(session.get_outputs())

    @classmethod
    def from_bytes(cls, name: str, version: int, data: bytes) -> OnnxModel:
        return cls(name, version, load_session(data))

    def bind(self, n_args: int, output: str | None, proba: bool) -> OnnxScorer:
        label = f"model {self.name!r} (version {self.version})"
        feeds = self._feeds(n_args, label)
        out = self._output(output, proba, label)
        kind, shape = out["type"], out["shape"]
        if kind not in TYPES:
            hint = ZIPMAP_HINT if kind.startswith("seq(") else "pick a tensor output"
            raise BadRequest(
                f"{label} output {out['name']!r} is {kind}; {hint}", code="unsupported_model_output"
            )
        width = shape[1] if len(shape) == 2 else 1
        if proba and width != 2:
            raise BadRequest(
                f"predict_proba needs an output of shape [N, 2] (a binary classifier's "
                f"probabilities); {label} output {out['name']!r} has shape {shape}: "
                f"use predict('{self.name}:{out['name']}', ...) for the list of values",
                code="bad_predict_call",
            )
        element = TYPES[kind][0]
        result = element if proba or width == 1 else pa.list_(element)
        return OnnxScorer(self.session, feeds, out["name"], result, proba, label)

    def _feeds(self, n_args: int, label: str) -> list[tuple[str, str, int]]:
        """(input name, ONNX type, columns) per input, checked against the argument count."""
        ins = self.inputs
        for i in ins:
            if i["type"] not in TYPES:
                raise BadRequest(f"{label} input {i['name']!r} is {i['type']}; models with tensor "
                                 "inputs of numbers or strings can score rows", code="unsupported_model_input")  # fmt: skip
        if len(ins) == 1 and len(ins[0]["shape"]) == 2 and ins[0]["shape"][1] != 1:
            k = ins[0]["shape"][1]
            if k is None:
                k = n_args
            wanted = f"{k} (the width of input {ins[0]['name']!r})"
            feeds = [(ins[0]["name"], ins[0]["type"], k)]
        else:
            wanted = f"{len(ins)} (one per input: {', '.join(i['name'] for i in ins)})"
            feeds = [(i["name"], i["type"], 0) for i in ins]
            k = len(ins)
        if n_args != k:
            raise BadRequest(
                f"predict('{self.name}', ...) has {n_args} value argument(s); {label} takes {wanted}",
                code="bad_predict_call",
            )
        return feeds

    def _output(self, output: str | None, proba: bool, label: str) -> dict[str, Any]:
        outs = self.outputs
        if output is not None:
            found = [o for o in outs if o["name"] == output]
            if not found:
                names = ", ".join(o["name"] for o in outs)
                raise BadRequest(f"{label} has no output {output!r}; its outputs: {names}",
                                 code="unknown_model_output")  # fmt: skip
            return found[0]
        if proba:
            wide = [o for o in outs if len(o["shape"]) == 2 and o["type"] in TYPES]
            if not wide:
                zip_ = any(o["type"].startswith("seq(") for o in outs)
                hint = ZIPMAP_HINT if zip_ else "the model has no [N, classes] output"
                raise BadRequest(f"predict_proba: {label} has no probability tensor; {hint}",
                                 code="unsupported_model_output")  # fmt: skip
            return wide[0]
        return outs[0]


@dataclass(frozen=True, slots=True)
class OnnxScorer:
    session: Any
    feeds: list[tuple[str, str, int]]  # (input, ONNX type, columns; 0: one argument)
    output: str
    type: pa.DataType
    proba: bool
    label: str

    @property
    def arg_types(self) -> tuple[str, ...]:
        return tuple(TYPES[t][1] for _, t, k in self.feeds for _ in range(max(k, 1)))

    def run(self, args: Sequence[pa.Array]) -> tuple[pa.Array, Failures]:
        n = len(args[0]) if args else 0
        valid = np.ones(n, dtype=bool)
        for a in args:
            if a.null_count:
                valid &= np.asarray(pc.is_valid(a).to_numpy(zero_copy_only=False))
        rows = np.flatnonzero(valid)
        cols = [self._numpy(a, rows) for a in args]
        failures: Failures = []
        try:
            values = self._score(cols, len(rows))
        except Exception:
            values, failures = self._rows(cols, rows)
        if len(rows) == n:
            return values, failures
        return _scatter(values, rows, n), failures

    def _numpy(self, a: pa.Array, rows: np.ndarray) -> np.ndarray:
        taken = a if len(rows) == len(a) else a.take(pa.array(rows))
        if pa.types.is_string(taken.type):
            return np.asarray(taken.to_pylist(), dtype=object)
        return np.asarray(taken.to_numpy(zero_copy_only=False))

    def _score(self, cols: list[np.ndarray], n: int) -> pa.Array:
        feed: dict[str, np.ndarray] = {}
        at = 0
        for name, _, k in self.feeds:
            if k:
                feed[name] = (
                    np.column_stack(cols[at : at + k]) if n else np.empty((0, k), cols[0].dtype)
                )
                at += k
            else:
                feed[name] = cols[at].reshape(n, 1)
                at += 1
        out = np.asarray(self.session.run([self.output], feed)[0])
        if self.proba:
            return pa.array(out[:, 1], self.type)
        if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
            return pa.array(out.reshape(n), self.type)
        return pa.array(list(out), self.type)

    def _rows(self, cols: list[np.ndarray], rows: np.ndarray) -> tuple[pa.Array, Failures]:
        """Score row by row after the batch failed, to name the rows the model fails on."""
        failures: Failures = []
        parts = []
        for i in range(len(rows)):
            try:
                parts.append(self._score([c[i : i + 1] for c in cols], 1))
            except Exception as exc:
                failures.append((int(rows[i]), f"{self.label}: {exc}"))
                parts.append(pa.nulls(1, self.type))
        return (pa.concat_arrays(parts) if parts else pa.array([], self.type)), failures


def _scatter(values: pa.Array, rows: np.ndarray, n: int) -> pa.Array:
    """``values`` placed at ``rows`` of an array of ``n`` (nulls elsewhere)."""
    where = np.full(n, -1, dtype=np.int64)
    where[rows] = np.arange(len(rows))
    index = pa.array(where, mask=where < 0)
    return values.take(index)


class InMemoryModels:
    """Models held in memory, by name then version: for tests and embedding."""

    def __init__(self) -> None:
        self._models: dict[str, dict[int, Model]] = {}

    def add(self, model: Model) -> None:
        self._models.setdefault(model.name, {})[model.version] = model

    def get(self, name: str, version: int | None) -> Model:
        versions = self._models.get(name, {})
        if not versions or (version is not None and version not in versions):
            at = "" if version is None else f" version {version}"
            raise NotFound(f"model {name!r}{at} does not exist; upload it with POST /v1/models",
                           code="unknown_model")  # fmt: skip
        return versions[max(versions) if version is None else version]
