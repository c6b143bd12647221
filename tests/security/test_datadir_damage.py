"""G1 for the data directory's other files: a damaged catalog, store or answer file stops
the start with a message naming the file and what it holds — never a traceback from deep
inside a driver, never a start on half the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headwater.datadir import DataDirDamaged
from headwater.runtime import build_runtime
from headwater.settings import Settings


def settings(data: Path) -> Settings:
    return Settings(data_dir=data, bootstrap_key="hw_test_key_0123456789")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory a server has run on and closed."""
    import asyncio

    from headwater.model.schema import schema_from_dict

    p = build_runtime(settings(tmp_path / "data"))
    spec = {"name": "s", "fields": [{"name": "k", "type": "string"}]}
    p.streams.create("default", schema_from_dict(spec), 0, set())  # the tenant's store file
    asyncio.run(p.stop())
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
        ("store/default.duckdb", 0, "consumer's offsets"),
    ],
)
def test_a_damaged_file_refuses_to_start_saying_what_is_at_stake(
    data: Path, name: str, at: int, holds: str
) -> None:
    target = data / name
    assert target.stat().st_size > at + 64
    overwrite(target, at, b"\xa5" * 64)
    with pytest.raises(DataDirDamaged) as info:
        build_runtime(settings(data))
    message = info.value.message
    assert str(target) in message and holds in message and "backup" in message
    assert "\n" not in message


def test_a_damaged_event_id_index_is_rebuilt_from_the_store_and_the_log(tmp_path: Path) -> None:
    import asyncio

    import orjson

    from headwater.model.schema import schema_from_dict

    data = tmp_path / "data"
    schema = schema_from_dict(
        {"name": "s", "fields": [{"name": "id", "type": "string"}, {"name": "ts", "type": "timestamp"}],
         "event_time": "ts", "id": "id"}
    )  # fmt: skip
    body = b"\n".join(
        orjson.dumps({"id": f"e{i}", "ts": "2026-01-01T00:00:00Z"}) for i in range(50)
    )

    async def first_run() -> None:
        p = build_runtime(settings(data))
        await p.start()
        try:
            st = p.streams.create("default", schema, 0, set())
            out = await p.ingest.ingest(st, body, "application/x-ndjson", None, None, "k", "r")
            assert b'"accepted":50' in out.body.replace(b" ", b"")
            # the store holds the ids now
            assert await p.materializer.caught_up(st.topic, 50, timeout_s=30)
            # As if the ids had been spilled: only the runs would hold them (the start reads
            # the log from `covered` on), so only a rebuild from the store can bring them back.
            st.ids.runs.add(np.empty(0, np.uint64), covered=50)  # type: ignore[union-attr]
        finally:
            await p.stop()

    async def second_run() -> None:
        p = build_runtime(settings(data))
        await p.start()
        try:
            st = p.streams.get("default", "s")
            out = await p.ingest.ingest(st, body, "application/x-ndjson", None, None, "k", "r")
            assert b'"accepted":0' in out.body.replace(b" ", b"")  # still duplicates
            assert list((data / "ids").glob("default.s.damaged-*"))
        finally:
            await p.stop()

    asyncio.run(first_run())
    (data / "ids" / "default.s" / "manifest.json").write_text("{not json")
    asyncio.run(second_run())
