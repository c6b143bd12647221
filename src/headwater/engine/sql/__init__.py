"""The pipeline SQL dialect: statement splitting, FROM forms, aggregates, planning."""

from headwater.engine.sql.planner import plan_pipeline

__all__ = ["plan_pipeline"]
