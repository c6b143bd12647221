"""Model scoring speed: ``predict`` over N rows in 100k-row micro-batches.

A scikit-learn LogisticRegression and a DecisionTreeRegressor (depth 8) over two
features, exported with skl2onnx, scored by a stateless pipeline
(``SELECT device_id, predict(...) AS p FROM readings``) through the engine alone, on
in-memory Arrow, next to onnxruntime called directly on the same float32 matrix.

    python benchmarks/models.py                  # 1M rows
    python benchmarks/models.py --rows 5000000
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pyarrow as pa
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeRegressor

from headwater.engine import Pipeline
from headwater.engine.models import InMemoryModels, OnnxModel

SCHEMA = pa.schema(
    [("device_id", pa.string()), ("temperature", pa.float64()), ("humidity", pa.float64())]
)
BATCH = 100_000


def rows(n: int) -> pa.Table:
    rng = np.random.default_rng(1)
    ids = np.array([f"device-{i:04d}" for i in range(1000)])
    return pa.table({"device_id": ids[rng.integers(0, 1000, n)],
                     "temperature": rng.normal(20, 5, n), "humidity": rng.uniform(0, 100, n)})  # fmt: skip


def fitted() -> dict[str, OnnxModel]:
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(20, 5, 5000), rng.uniform(0, 100, 5000)]).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] / 5 + x[:, 1] / 40 > 6).astype(np.int64))
    reg = DecisionTreeRegressor(max_depth=8).fit(x, x[:, 0] * 2 + x[:, 1] / 7)
    return {
        "logistic": OnnxModel.from_bytes(
            "logistic", 1, to_onnx(clf, x[:1], options={"zipmap": False}).SerializeToString()
        ),
        "tree": OnnxModel.from_bytes("tree", 1, to_onnx(reg, x[:1]).SerializeToString()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    data = rows(args.rows)
    batches = [data.slice(i, BATCH) for i in range(0, args.rows, BATCH)]
    models = InMemoryModels()
    for m in fitted().values():
        models.add(m)
    for name, call in (("logistic", "predict_proba"), ("tree", "predict")):
        sql = f"CREATE PIPELINE b AS SELECT device_id, {call}('{name}', temperature, humidity) AS p FROM readings"
        p = Pipeline.from_sql(sql, SCHEMA, models=models)
        start = time.perf_counter()
        out = 0
        for b in batches:
            out += p.process(b, 0).appends.num_rows
        pipeline_s = time.perf_counter() - start
        session = models.get(name, 1).session  # type: ignore[attr-defined]
        start = time.perf_counter()
        for b in batches:
            x = np.column_stack([b["temperature"].to_numpy(), b["humidity"].to_numpy()])
            session.run(None, {"X": x.astype(np.float32)})
        direct_s = time.perf_counter() - start
        print(f"{name:9s} {call:14s} rows={out:,}  pipeline {args.rows / pipeline_s:,.0f} rows/s"
              f"  onnxruntime alone {args.rows / direct_s:,.0f} rows/s")  # fmt: skip


if __name__ == "__main__":
    main()
