"""Serving store: ports and adapters (embedded DuckDB, in-memory, PostgreSQL)."""
