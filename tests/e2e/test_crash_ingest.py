"""G1 + G2: kill -9 the server while clients ingest with retries; nothing acked is lost or doubled.

50-row bodies are ingested one request at a time (each request its own log entry); the
coalesced case, where concurrent requests share entries, is ``test_crash_ingest_coalesced``.
"""

from __future__ import annotations

from pathlib import Path

from ingest_crash import kill9_during_ingest


def test_kill9_during_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    kill9_during_ingest(tmp_path, rows=50)
