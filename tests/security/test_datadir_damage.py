"""G1 for the data directory's other files: a damaged catalog, store or answer file stops
the start with a message naming the file and what it holds — never a traceback from deep
inside a driver, never a start on half the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from headwater.datadir import DataDirDamaged
from headwater.services import build_platform
from headwater.settings import Settings


def settings(data: Path) -> Settings:
    return Settings(data_dir=data, bootstrap_key="hw_test_key_0123456789")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory a server has run on and closed."""
    import asyncio

    p = build_platform(settings(tmp_path / "data"))
    asyncio.run(p.close())
    return tmp_path / "data"


def overwrite(path: Path, at: int, junk: bytes) -> None:
    raw = bytearray(path.read_bytes())
    raw[at : at + len(junk)] = junk
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("name", "at", "holds"),
    [
        ("catalog.sqlite", 0, "API keys"),  # the file header
        ("catalog.sqlite", 4096 + 8, "API keys"),  # inside a b-tree page
        ("answers.sqlite", 0, "idempotency answers"),
        ("store.duckdb", 0, "consumer's offsets"),
    ],
)
def test_a_damaged_file_refuses_to_start_saying_what_is_at_stake(
    data: Path, name: str, at: int, holds: str
) -> None:
    target = data / name
    assert target.stat().st_size > at + 64
    overwrite(target, at, b"\xa5" * 64)
    with pytest.raises(DataDirDamaged) as info:
        build_platform(settings(data))
    message = info.value.message
    assert str(target) in message and holds in message and "backup" in message
    assert "\n" not in message
