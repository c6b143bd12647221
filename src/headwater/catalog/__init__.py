"""The catalog: tenants, API keys, streams and their schema versions, pipelines.

Low-volume metadata kept in SQLite in the data dir; never on the event hot path.
"""
