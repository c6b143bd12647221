"""The ``ReferenceTables`` contract: every adapter must pass this suite unchanged.

Each adapter comes with a small harness that writes rows the way that adapter is fed
in production: ``InMemoryReferenceTables.put`` for the in-memory one; a store commit
(an upsert by the table's key) followed by ``invalidate`` for ``StoreReferenceTables``,
as ``POST /v1/tables/{name}/rows`` does. The suite then checks only what a pipeline
relies on: ``get`` answers the current rows, ``NotFound`` for an unknown name, and an
update is seen by the next ``get`` (and so by the next batch of a joining pipeline).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from headwater.engine import InMemoryReferenceTables, Pipeline, ReferenceTables
from headwater.errors import NotFound
from headwater.pipelines.references import StoreReferenceTables
from headwater.store.duckdb import DuckDBStore
from headwater.store.memory import MemoryStore
from headwater.store.ports import ResultStore, ResultWrite

TENANT = "acme"
DEVICES = pa.schema([("device_id", pa.string()), ("site", pa.string()), ("floor", pa.int64())])
KEY = ["device_id"]
READINGS = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("temperature", pa.float64()),
    ]
)


class Harness(Protocol):
    tables: ReferenceTables

    def upsert(self, name: str, rows: pa.Table) -> None:
        """Insert or replace rows by ``device_id`` and make the adapter see them."""
        ...


class InMemoryHarness:
    def __init__(self, names: list[str]) -> None:
        self.tables = InMemoryReferenceTables({n: DEVICES.empty_table() for n in names})
        self._rows = {n: DEVICES.empty_table() for n in names}

    def upsert(self, name: str, rows: pa.Table) -> None:
        old = self._rows[name]
        kept = old.filter(pc.invert(pc.is_in(old["device_id"], value_set=rows["device_id"])))
        self._rows[name] = pa.concat_tables([kept, rows.cast(DEVICES)])
        self.tables.put(name, self._rows[name])


class StoreHarness:
    def __init__(self, store: ResultStore, names: list[str]) -> None:
        for n in names:
            store.ensure_table(TENANT, n, DEVICES, KEY)
        self._store = store
        self.tables = StoreReferenceTables(store, TENANT, set(names))

    def upsert(self, name: str, rows: pa.Table) -> None:
        write = ResultWrite(consumer=f"reference:{name}", offsets={}, upserts={name: (rows, KEY)})
        self._store.commit(TENANT, write)
        self.tables.invalidate(name)


def make_in_memory(_: Path, names: list[str]) -> tuple[Harness, ResultStore | None]:
    return InMemoryHarness(names), None


def make_store_memory(_: Path, names: list[str]) -> tuple[Harness, ResultStore | None]:
    store = MemoryStore()
    return StoreHarness(store, names), store


def make_store_duckdb(tmp_path: Path, names: list[str]) -> tuple[Harness, ResultStore | None]:
    store = DuckDBStore(tmp_path / "store", memory_limit="512MB", threads=2)
    return StoreHarness(store, names), store


Factory = Callable[[Path, list[str]], tuple[Harness, ResultStore | None]]


@pytest.fixture(
    params=[make_in_memory, make_store_memory, make_store_duckdb],
    ids=["in_memory", "store_memory", "store_duckdb"],
)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    factory: Factory = request.param
    h, store = factory(tmp_path, ["devices", "sites"])
    yield h
    if store is not None:
        store.close()


def devices(*rows: tuple[str, str | None, int | None]) -> pa.Table:
    ids, sites, floors = zip(*rows, strict=True) if rows else ((), (), ())
    return pa.table(
        {"device_id": list(ids), "site": list(sites), "floor": list(floors)}, schema=DEVICES
    )


def as_dict(table: pa.Table) -> dict[str, tuple[object, object]]:
    return {r["device_id"]: (r["site"], r["floor"]) for r in table.to_pylist()}


def test_get_answers_the_current_rows(harness: Harness) -> None:
    harness.upsert("devices", devices(("a", "north", 1), ("b", "south", None)))
    table = harness.tables.get("devices")
    assert as_dict(table) == {"a": ("north", 1), "b": ("south", None)}
    assert table.schema.names == DEVICES.names
    assert [f.type for f in table.schema] == [f.type for f in DEVICES]


def test_an_empty_table_has_its_schema(harness: Harness) -> None:
    table = harness.tables.get("sites")
    assert table.num_rows == 0
    assert table.schema.names == DEVICES.names


def test_unknown_name_is_not_found_with_a_hint(harness: Harness) -> None:
    with pytest.raises(NotFound) as err:
        harness.tables.get("nowhere")
    assert "nowhere" in err.value.message and "create" in err.value.message


def test_updates_are_visible_to_the_next_get(harness: Harness) -> None:
    harness.upsert("devices", devices(("a", "north", 1), ("b", "south", 2)))
    assert as_dict(harness.tables.get("devices"))["a"] == ("north", 1)
    harness.upsert("devices", devices(("a", "east", 3), ("c", "west", 4)))
    assert as_dict(harness.tables.get("devices")) == {
        "a": ("east", 3),
        "b": ("south", 2),
        "c": ("west", 4),
    }


def test_tables_are_independent(harness: Harness) -> None:
    harness.upsert("devices", devices(("a", "north", 1)))
    harness.upsert("sites", devices(("x", "far", 9)))
    harness.upsert("devices", devices(("a", "east", 2)))
    assert as_dict(harness.tables.get("sites")) == {"x": ("far", 9)}
    assert as_dict(harness.tables.get("devices")) == {"a": ("east", 2)}


def test_repeated_gets_without_updates_agree(harness: Harness) -> None:
    harness.upsert("devices", devices(("a", "north", 1)))
    first = harness.tables.get("devices")
    assert all(harness.tables.get("devices").equals(first) for _ in range(3))


class PausingStore:
    """A store whose ``sql`` can be held after it has read, to interleave a commit."""

    def __init__(self, store: ResultStore) -> None:
        self._store = store
        self.hold = False
        self.has_read = threading.Event()
        self.release = threading.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def sql(self, tenant: str, query: str, *, max_rows: int, timeout_s: float) -> pa.Table:
        table = self._store.sql(tenant, query, max_rows=max_rows, timeout_s=timeout_s)
        if self.hold:
            self.has_read.set()
            self.release.wait(10)
        return table


@pytest.mark.parametrize("kind", ["memory", "duckdb"])
def test_store_cache_never_keeps_a_version_read_before_an_update(kind: str, tmp_path: Path) -> None:
    """A ``get`` that read the old rows while an update committed must not cache them."""
    store: ResultStore = (
        DuckDBStore(tmp_path / "s.duckdb", memory_limit="512MB", threads=2)
        if kind == "duckdb"
        else MemoryStore()
    )
    paused = PausingStore(store)
    h = StoreHarness(paused, ["devices"])  # type: ignore[arg-type]
    h.upsert("devices", devices(("a", "old", 1)))
    paused.hold = True
    reader = threading.Thread(target=h.tables.get, args=("devices",))
    reader.start()
    assert paused.has_read.wait(10)  # the reader holds the old rows, not yet cached
    paused.hold = False
    h.upsert("devices", devices(("a", "new", 2)))  # commit + invalidate meanwhile
    paused.release.set()
    reader.join(10)
    try:
        assert as_dict(h.tables.get("devices")) == {"a": ("new", 2)}
    finally:
        store.close()


def test_a_joining_pipeline_sees_updates_from_its_next_batch(harness: Harness) -> None:
    harness.upsert("devices", devices(("a", "north", 1)))
    pipeline = Pipeline.from_sql(
        "CREATE PIPELINE enriched AS SELECT r.device_id, d.site, r.temperature "
        "FROM readings r LEFT JOIN devices d ON r.device_id = d.device_id",
        READINGS,
        harness.tables,
    )

    def batch(t: float) -> pa.Table:
        return pa.table(
            {"device_id": ["a", "z"], "ts": [1_000, 2_000], "temperature": [t, t]}, schema=READINGS
        )

    first = pipeline.process(batch(1.0), now_ms=0).appends
    assert first is not None
    assert sorted((r["device_id"], r["site"]) for r in first.to_pylist()) == [
        ("a", "north"),
        ("z", None),
    ]
    harness.upsert("devices", devices(("a", "south", 1), ("z", "west", 2)))
    second = pipeline.process(batch(2.0), now_ms=1).appends
    assert second is not None
    assert sorted((r["device_id"], r["site"]) for r in second.to_pylist()) == [
        ("a", "south"),
        ("z", "west"),
    ]
