"""Metrics, structured logs, tracing and health."""
