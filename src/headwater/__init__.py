"""Headwater: real-time data processing in one process.

Ingest event streams, validate them against versioned schemas, run streaming SQL
pipelines and serve raw and processed data over HTTP.
"""

__version__ = "0.1.0"
