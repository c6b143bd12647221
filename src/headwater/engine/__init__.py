"""The streaming SQL engine: planner, time logic, operators and the pipeline that chains them.

Pure core: no I/O, no web framework, no store driver. DuckDB runs in memory to
evaluate row expressions over Arrow micro-batches.
"""

from headwater.engine.operators.base import Operator, StepOutput
from headwater.engine.pipeline import Pipeline
from headwater.engine.plan import Plan
from headwater.engine.references import InMemoryReferenceTables, ReferenceTables
from headwater.engine.sql.planner import plan_pipeline

__all__ = [
    "InMemoryReferenceTables",
    "Operator",
    "Pipeline",
    "Plan",
    "ReferenceTables",
    "StepOutput",
    "plan_pipeline",
]
