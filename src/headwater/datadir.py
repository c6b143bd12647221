"""Opening the files of a data directory, and saying what is at stake when one is damaged.

Each file is opened through ``open_part``: a file that cannot be read stops the start
with ``DataDirDamaged`` — naming the file, what it holds and what to do — instead of a
traceback or a silent loss. The log gets the offsets every consumer committed, so it
refuses to hand out an offset a consumer has already read past.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import duckdb

from headwater.errors import HeadwaterError
from headwater.ingest.answers import AnswerFile
from headwater.store.ports import ResultStore

T = TypeVar("T")

ANSWERS_CONSUMER = "idempotency-answer copier"

STAKES = {
    "catalog": "tenants, API keys, streams, pipelines, sources, sinks and alert rules",
    "store": "stored rows, pipeline results, and every consumer's offsets and checkpoints",
    "answers": (
        "idempotency answers older than the hot log (a retried request with such a key could "
        "be stored twice); moving it aside rebuilds the answers still in the log"
    ),
}


class DataDirDamaged(HeadwaterError):
    """A file of the data directory cannot be read; the server does not start."""

    code = "data_dir_damaged"


def open_part(part: str, path: Path, opener: Callable[[], T]) -> T:
    """``opener()``, turning a damaged-file error into ``DataDirDamaged``."""
    try:
        return opener()
    except (sqlite3.DatabaseError, duckdb.Error) as exc:
        raise DataDirDamaged(
            f"the {part} file {path} cannot be read ({_first_line(exc)}). It holds "
            f"{STAKES[part]}. The server will not start on it: restore the file from a "
            "backup (with the server stopped), or move the whole data directory aside.",
            path=str(path),
        ) from exc


def open_sqlite_part(part: str, path: Path, opener: Callable[[], T]) -> T:
    """``open_part`` for a SQLite file: its structure is checked first (``quick_check``)."""

    def checked() -> T:
        if path.exists():
            db = sqlite3.connect(str(path))
            try:
                problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
            finally:
                db.close()
            if problems != ["ok"]:
                raise sqlite3.DatabaseError("; ".join(str(p) for p in problems[:3]))
        return opener()

    return open_part(part, path, checked)


def committed_offsets(store: ResultStore, answers: AnswerFile | None) -> dict[str, dict[str, int]]:
    """topic -> {consumer: offset it committed}, from the store and the answer file."""
    found: dict[str, dict[str, int]] = {}
    for (tenant, consumer), offsets in store.committed_offsets().items():
        for topic, offset in offsets.items():
            found.setdefault(topic, {})[f"{tenant}/{consumer}"] = offset
    if answers is not None:
        for topic, offset in answers.progress().items():
            found.setdefault(topic, {})[ANSWERS_CONSUMER] = offset
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
