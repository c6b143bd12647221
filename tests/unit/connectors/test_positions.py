"""Source positions: the log's commits beat the position file's, and a start keeps them."""

from pathlib import Path

import pyarrow as pa

from headwater.connectors.sources.positions import PositionFile, recover
from headwater.ingest.accept import SourceCommit, commit_meta
from headwater.log.file import FileLog

TOPIC = "default.s"


def commit(log: FileLog, partition: str, position: str, seq: int) -> int:
    """Append one row whose entry carries the commit; return the entry's end offset."""
    meta = commit_meta(SourceCommit("default", "src", partition, position, seq))
    done = log.append_blocking(TOPIC, pa.record_batch({"x": [seq]}), meta)
    return done.offset + done.count


def test_a_commit_only_the_log_held_survives_the_next_commit_and_restart(tmp_path: Path) -> None:
    """Crash after a's last append but before its save; a start; b commits; a start."""
    log = FileLog(tmp_path / "log", fsync=False)
    file = PositionFile(tmp_path / "sources.sqlite")
    try:
        file.save("default", "src", "a", "100", 1, TOPIC, commit(log, "a", "100", 1))
        commit(log, "a", "done", 2)  # durable, never copied to the file
        first = recover(log, file, "default", "src", 0, [TOPIC])
        assert first.positions == {"a": ("done", 2)}
        assert (first.unsaved, first.read_to) == ({"a": ("done", 2)}, {TOPIC: 2})
        file.keep("default", "src", first)
        file.save("default", "src", "b", "7", 3, TOPIC, commit(log, "b", "7", 3))
        second = recover(log, file, "default", "src", 0, [TOPIC])
        assert second.positions == {"a": ("done", 2), "b": ("7", 3)}
        assert (second.unsaved, second.read_to) == ({}, {})  # the file knew it all
    finally:
        file.close()
        log.close_blocking()


def test_keep_never_moves_a_position_or_a_progress_back(tmp_path: Path) -> None:
    """A start's copy that lost a race with a newer save leaves the newer one."""
    log = FileLog(tmp_path / "log", fsync=False)
    file = PositionFile(tmp_path / "sources.sqlite")
    try:
        commit(log, "a", "10", 1)
        stale = recover(log, file, "default", "src", 0, [TOPIC])
        file.save("default", "src", "a", "20", 2, TOPIC, commit(log, "a", "20", 2))
        file.keep("default", "src", stale)
        assert file.load("default", "src") == ({"a": ("20", 2)}, {TOPIC: 2})
    finally:
        file.close()
        log.close_blocking()
