"""G1 + G2 for coalesced requests: kill -9 the server while clients ingest with retries.

5-row bodies of concurrent clients share log entries (``ingest/coalesce.py``), whose meta
holds several keys' answers; nothing acked is lost or doubled. (Its own file, apart from
``test_crash_ingest``, so that the two crash runs can go side by side.)
"""

from __future__ import annotations

from pathlib import Path

from ingest_crash import kill9_during_ingest


def test_kill9_during_coalesced_ingest_loses_and_doubles_nothing(tmp_path: Path) -> None:
    kill9_during_ingest(tmp_path, rows=5)
