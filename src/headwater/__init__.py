"""Headwater: real-time data processing in one process.

Ingest event streams, validate them against versioned schemas, run streaming SQL
pipelines and serve raw and processed data over HTTP.

For Python code: ``headwater.udf`` registers a scalar function for pipeline SQL
(``headwater.engine.udfs``), and ``headwater.Pipeline`` builds a pipeline's SQL in code
(``headwater.engine.builder``), with the aggregates ``count``, ``avg``, ``sum_``,
``min_``, ``max_``... They load on first use, so ``import headwater`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_BUILDER = ("Pipeline", "Agg", "count", "count_distinct", "avg", "sum_", "min_", "max_",
            "stddev", "quantile")  # fmt: skip
__all__ = ["__version__", "udf", *_BUILDER]


def __getattr__(name: str) -> Any:
    if name == "udf":
        from headwater.engine.udfs import udf

        return udf
    if name in _BUILDER:
        from headwater.engine import builder

        return getattr(builder, name)
    raise AttributeError(f"module 'headwater' has no attribute {name!r}")
