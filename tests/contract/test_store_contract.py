"""The ``ResultStore`` contract: every adapter must pass this suite unchanged."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.errors import BadRequest, Conflict, IncompatibleSchema, NotFound, QueryError
from headwater.store.duckdb import DuckDBStore
from headwater.store.memory import MemoryStore
from headwater.store.ports import ResultStore, ResultWrite, RowQuery, is_truncated

TS = pa.timestamp("ms", tz="UTC")
TENANT = "acme"
READINGS = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", TS),
        ("temperature", pa.float64()),
        ("status", pa.string()),
        ("_offset", pa.int64()),
        ("_received_ms", pa.int64()),
        ("_schema_version", pa.int32()),
        ("_id_hash", pa.uint64()),
    ]
)
MINUTE = pa.schema([("device_id", pa.string()), ("window_start", TS), ("n", pa.int64())])


def make_memory(_: Path) -> ResultStore:
    return MemoryStore()


def make_duckdb(tmp_path: Path) -> ResultStore:
    return DuckDBStore(tmp_path / "store", memory_limit="512MB", threads=2)


@pytest.fixture(params=[make_memory, make_duckdb], ids=["memory", "duckdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    factory: Callable[[Path], ResultStore] = request.param
    adapter = factory(tmp_path)
    yield adapter
    adapter.close()


def readings(
    offsets: list[int], times: list[int | None], devices: list[str] | None = None
) -> pa.Table:
    n = len(offsets)
    return pa.table(
        {
            "device_id": devices or [f"d{o % 3}" for o in offsets],
            "ts": pa.array(times, TS),
            "temperature": [float(o) for o in offsets],
            "status": ["ok" if o % 2 else "warn" for o in offsets],
            "_offset": pa.array(offsets, pa.int64()),
            "_received_ms": pa.array([1_000 + o for o in offsets], pa.int64()),
            "_schema_version": pa.array([1] * n, pa.int32()),
            "_id_hash": pa.array([o + 100 for o in offsets], pa.uint64()),
        }
    )


def append(store: ResultStore, table: str, rows: pa.Table, offset: int = 0) -> None:
    store.commit(TENANT, ResultWrite("materialize", {"t": offset}, appends={table: rows}))


def seeded(store: ResultStore, n: int = 10) -> ResultStore:
    store.ensure_table(TENANT, "readings", READINGS)
    append(store, "readings", readings(list(range(n)), [1_000 * (o // 2) for o in range(n)]), n)
    return store


def all_pages(store: ResultStore, query: RowQuery) -> list[list[int]]:
    pages, cursor = [], None
    while True:
        page = store.read_rows(RowQuery(**{**_fields(query), "cursor": cursor}))
        pages.append(page.rows.column("_offset").to_pylist())
        cursor = page.next_cursor
        if cursor is None:
            return pages


def _fields(query: RowQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in RowQuery.__slots__}


# --- tables -------------------------------------------------------------------


def test_ensure_table_stores_timestamps_as_ms_utc(store: ResultStore) -> None:
    schema = pa.schema([("ts", pa.timestamp("us")), ("v", pa.int64())])
    store.ensure_table(TENANT, "events", schema)
    assert store.table_schema(TENANT, "events") == pa.schema([("ts", TS), ("v", pa.int64())])
    store.ensure_table(TENANT, "events", schema)  # idempotent
    assert store.table_schema(TENANT, "other") is None


def test_ensure_table_adds_columns_and_widens_types(store: ResultStore) -> None:
    store.ensure_table(TENANT, "t", pa.schema([("a", pa.int64()), ("b", pa.int32())]))
    append(store, "t", pa.table({"a": [1], "b": pa.array([2], pa.int32())}))
    store.ensure_table(
        TENANT, "t", pa.schema([("a", pa.float64()), ("b", pa.int64()), ("c", pa.string())])
    )
    assert store.table_schema(TENANT, "t") == pa.schema(
        [("a", pa.float64()), ("b", pa.int64()), ("c", pa.string())]
    )
    append(store, "t", pa.table({"a": [1.5], "c": ["x"]}))
    rows = store.read_rows(RowQuery(TENANT, "t")).rows
    assert rows.to_pylist() == [{"a": 1.0, "b": 2, "c": None}, {"a": 1.5, "b": None, "c": "x"}]
    # A narrower type later is fine: the column keeps its wider type.
    store.ensure_table(TENANT, "t", pa.schema([("a", pa.int64())]))
    assert store.table_schema(TENANT, "t").field("a").type == pa.float64()  # type: ignore[union-attr]


def test_exact_integer_sums_are_stored_and_bigint_columns_widen_to_them(
    store: ResultStore,
) -> None:
    """A pipeline's integer sums are decimal128(38, 0) (DuckDB's HUGEINT); a table made when
    they were BIGINT widens."""
    key = ["device_id", "window_start"]
    store.ensure_table(TENANT, "m", MINUTE, key=key)
    row = {"device_id": ["a"], "window_start": pa.array([0], TS)}
    store.commit(TENANT, ResultWrite("p", {}, upserts={"m": (pa.table({**row, "n": [1]}), key)}))
    wide = pa.decimal128(38, 0)
    store.ensure_table(
        TENANT, "m", pa.schema([MINUTE.field(0), MINUTE.field(1), ("n", wide)]), key=key
    )
    assert store.table_schema(TENANT, "m").field("n").type == wide  # type: ignore[union-attr]
    big = pa.array([2**64 + 1], wide)
    store.commit(TENANT, ResultWrite("p", {}, upserts={"m": (pa.table({**row, "n": big}), key)}))
    rows = store.read_rows(RowQuery(TENANT, "m")).rows
    assert rows["n"].type == wide and rows["n"].to_pylist() == big.to_pylist()


def test_ensure_table_refuses_incompatible_types_and_key_changes(store: ResultStore) -> None:
    store.ensure_table(TENANT, "m", MINUTE, key=["device_id", "window_start"])
    with pytest.raises(IncompatibleSchema):
        store.ensure_table(TENANT, "m", pa.schema([("n", pa.bool_())]))
    with pytest.raises(IncompatibleSchema):
        store.ensure_table(TENANT, "m", MINUTE, key=["device_id"])
    store.ensure_table(TENANT, "m", MINUTE)  # key None keeps the key


def test_keyed_tables_evolve_and_keep_upserting(store: ResultStore) -> None:
    key = ["device_id", "window_start"]
    store.ensure_table(TENANT, "m", pa.schema([*MINUTE, ("avg", pa.int32())]), key=key)
    row = {"device_id": ["a"], "window_start": pa.array([0], TS)}
    store.commit(TENANT, ResultWrite("p", {}, upserts={"m": (pa.table({**row, "n": [1]}), key)}))
    store.ensure_table(TENANT, "m", pa.schema([("avg", pa.float64()), ("p99", pa.float64())]))
    store.commit(
        TENANT,
        ResultWrite("p", {}, upserts={"m": (pa.table({**row, "n": [2], "avg": [1.5]}), key)}),
    )
    rows = store.read_rows(RowQuery(TENANT, "m")).rows.to_pylist()
    assert [(r["n"], r["avg"], r["p99"]) for r in rows] == [(2, 1.5, None)]


@pytest.mark.parametrize(
    ("tenant", "table", "schema", "code"),
    [
        ("acme", "bad name", MINUTE, "invalid_name"),
        ("ac;me", "t", MINUTE, "invalid_name"),
        ("acme", "t", pa.schema([("l", pa.list_(pa.int64()))]), "unsupported_type"),
        ("acme", "t", pa.schema([("a", pa.int64()), ("a", pa.int64())]), "duplicate_column"),
    ],
)
def test_ensure_table_refuses_bad_names_and_types(
    store: ResultStore, tenant: str, table: str, schema: pa.Schema, code: str
) -> None:
    with pytest.raises(BadRequest) as err:
        store.ensure_table(tenant, table, schema)
    assert err.value.code == code


def test_table_names_are_unique_per_tenant_ignoring_case(store: ResultStore) -> None:
    store.ensure_table(TENANT, "readings", READINGS)
    with pytest.raises(Conflict):
        store.ensure_table(TENANT, "Readings", READINGS)
    store.ensure_table("other", "Readings", READINGS)  # another tenant: its own namespace


def test_drop_table_removes_rows_and_is_idempotent(store: ResultStore) -> None:
    seeded(store)
    store.drop_table(TENANT, "readings")
    store.drop_table(TENANT, "readings")
    assert store.table_schema(TENANT, "readings") is None
    with pytest.raises(NotFound):
        store.read_rows(RowQuery(TENANT, "readings"))
    store.ensure_table(TENANT, "readings", READINGS)
    assert store.count_rows(RowQuery(TENANT, "readings")) == 0


# --- commits ------------------------------------------------------------------


def test_commit_appends_rows_and_records_offsets(store: ResultStore) -> None:
    seeded(store, 4)
    assert store.count_rows(RowQuery(TENANT, "readings")) == 4
    assert store.consumer_offsets(TENANT, "materialize") == {"t": 4}
    assert store.consumer_offsets(TENANT, "nobody") == {}
    assert store.consumer_offsets("other", "materialize") == {}
    assert store.consumer_state(TENANT, "materialize") is None


def test_offsets_merge_by_topic_and_state_survives_a_write_without_one(store: ResultStore) -> None:
    store.commit(TENANT, ResultWrite("p", {"a": 1, "b": 1}, state=b"one"))
    store.commit(TENANT, ResultWrite("p", {"b": 7}))
    assert store.consumer_offsets(TENANT, "p") == {"a": 1, "b": 7}
    assert store.consumer_state(TENANT, "p") == b"one"
    store.commit(TENANT, ResultWrite("p", {}, state=b"two"))
    assert store.consumer_state(TENANT, "p") == b"two"


def test_committed_offsets_lists_every_consumer_of_every_tenant(store: ResultStore) -> None:
    store.commit(TENANT, ResultWrite("p", {"a": 1, "b": 1}))
    store.commit(TENANT, ResultWrite("p", {"b": 7}))
    store.commit("other", ResultWrite("q", {"a": 3}))
    assert store.committed_offsets() == {(TENANT, "p"): {"a": 1, "b": 7}, ("other", "q"): {"a": 3}}


def test_append_takes_a_subset_of_columns_and_widening_types(store: ResultStore) -> None:
    store.ensure_table(
        TENANT, "t", pa.schema([("a", pa.int64()), ("b", pa.float64()), ("c", pa.string())])
    )
    append(store, "t", pa.table({"b": pa.array([1], pa.int32()), "a": pa.array([2], pa.int8())}))
    assert store.read_rows(RowQuery(TENANT, "t")).rows.to_pylist() == [
        {"a": 2, "b": 1.0, "c": None}
    ]


def _failing_parts() -> dict[str, dict[str, Any]]:
    good_minute = pa.table({"device_id": ["d9"], "window_start": pa.array([0], TS), "n": [9]})
    key = ["device_id", "window_start"]
    return {
        "unknown upsert table": {"upserts": {"nope": (good_minute, key)}},
        "unknown column": {"upserts": {"minute": (good_minute.append_column("x", pa.array([1])), key)}},
        "type mismatch": {"upserts": {"minute": (good_minute.set_column(2, "n", pa.array(["x"])), key)}},
        "null key": {"upserts": {"minute": (good_minute.set_column(0, "device_id", pa.array([None], pa.string())), key)}},
        "key mismatch": {"upserts": {"minute": (good_minute, ["device_id"])}},
        "unknown append table": {"appends": {"readings": readings([100], [5]), "nope": readings([101], [5])}},
    }  # fmt: skip


@pytest.mark.parametrize("failure", list(_failing_parts()))
def test_commit_is_all_or_nothing(store: ResultStore, failure: str) -> None:
    seeded(store, 4)
    store.ensure_table(TENANT, "minute", MINUTE, key=["device_id", "window_start"])
    first = pa.table({"device_id": ["d1"], "window_start": pa.array([0], TS), "n": [1]})
    store.commit(
        TENANT,
        ResultWrite(
            "p", {"t": 4}, upserts={"minute": (first, ["device_id", "window_start"])}, state=b"s0"
        ),
    )
    parts: dict[str, Any] = {"appends": {"readings": readings([50, 51], [9_000, 9_001])}}
    parts.update(_failing_parts()[failure])
    with pytest.raises((BadRequest, NotFound)):
        store.commit(TENANT, ResultWrite("p", {"t": 99}, state=b"s1", **parts))
    assert store.count_rows(RowQuery(TENANT, "readings")) == 4
    assert store.read_rows(RowQuery(TENANT, "minute")).rows.to_pylist()[0]["n"] == 1
    assert store.count_rows(RowQuery(TENANT, "minute")) == 1
    assert store.consumer_offsets(TENANT, "p") == {"t": 4}
    assert store.consumer_state(TENANT, "p") == b"s0"


def test_upsert_replaces_whole_rows_and_the_last_row_per_key_wins(store: ResultStore) -> None:
    key = ["device_id", "window_start"]
    store.ensure_table(TENANT, "minute", MINUTE, key=key)
    batch = pa.table(
        {
            "device_id": ["a", "a", "b", "a"],
            "window_start": pa.array([0, 60_000, 0, 0], TS),
            "n": [1, 2, 3, 4],
        }
    )
    store.commit(TENANT, ResultWrite("p", {"t": 1}, upserts={"minute": (batch, key)}))
    store.commit(
        TENANT,
        ResultWrite("p", {"t": 2}, upserts={"minute": (pa.table({"device_id": ["b"], "window_start": pa.array([0], TS)}), key)}),
    )  # fmt: skip
    rows = store.read_rows(RowQuery(TENANT, "minute", "window_start")).rows
    got = sorted((r["device_id"], r["window_start"].timestamp(), r["n"]) for r in rows.to_pylist())
    assert got == [("a", 0.0, 4), ("a", 60.0, 2), ("b", 0.0, None)]


# --- reads --------------------------------------------------------------------


def test_read_rows_returns_typed_rows_without_internal_columns(store: ResultStore) -> None:
    seeded(store, 3)
    page = store.read_rows(RowQuery(TENANT, "readings", "ts"))
    assert page.rows.schema == pa.schema([f for f in READINGS if f.name != "_id_hash"])
    assert page.next_cursor is None
    empty = store.read_rows(RowQuery(TENANT, "readings", "ts", from_ms=10**12))
    assert empty.rows.num_rows == 0 and empty.rows.schema == page.rows.schema


def test_time_bounds_are_inclusive_then_exclusive(store: ResultStore) -> None:
    seeded(store, 10)  # times 0,0,1000,1000,...,4000,4000
    page = store.read_rows(RowQuery(TENANT, "readings", "ts", from_ms=1_000, to_ms=3_000))
    assert page.rows.column("_offset").to_pylist() == [2, 3, 4, 5]
    assert (
        store.count_rows(RowQuery(TENANT, "readings", "ts", from_ms=1_000, to_ms=3_000, limit=1))
        == 4
    )


def test_filters_match_equal_values_and_null(store: ResultStore) -> None:
    seeded(store, 10)
    append(store, "readings", readings([10], [None], devices=[None]), 11)  # type: ignore[list-item]
    q = RowQuery(TENANT, "readings", "ts", filters={"device_id": "d1", "status": "ok"})
    assert store.read_rows(q).rows.column("_offset").to_pylist() == [1, 7]
    q = RowQuery(TENANT, "readings", "ts", filters={"device_id": None})
    assert store.read_rows(q).rows.column("_offset").to_pylist() == [10]
    q = RowQuery(
        TENANT, "readings", "ts", filters={"_offset": "4"}
    )  # text is cast to the column type
    assert store.count_rows(q) == 1


@pytest.mark.parametrize(
    ("query", "code"),
    [
        (RowQuery(TENANT, "readings", "ts", filters={"nope": 1}), "unknown_column"),
        (RowQuery(TENANT, "readings", "nope"), "unknown_column"),
        (RowQuery(TENANT, "readings", "status"), "bad_time_column"),
        (RowQuery(TENANT, "readings", "ts", filters={"_offset": "x"}), "bad_filter"),
        (RowQuery(TENANT, "readings", "ts", limit=0), "bad_limit"),
        (RowQuery(TENANT, "readings", "ts", cursor="garbage!"), "bad_cursor"),
    ],
)
def test_read_rows_refuses_bad_queries(store: ResultStore, query: RowQuery, code: str) -> None:
    seeded(store, 3)
    with pytest.raises(BadRequest) as err:
        store.read_rows(query)
    assert err.value.code == code


def test_a_cursor_only_continues_its_own_query(store: ResultStore) -> None:
    seeded(store, 10)
    cursor = store.read_rows(RowQuery(TENANT, "readings", "ts", limit=2)).next_cursor
    with pytest.raises(BadRequest) as err:
        store.read_rows(RowQuery(TENANT, "readings", "ts", order="desc", cursor=cursor))
    assert err.value.code == "bad_cursor"


def _expected(rows: list[dict[str, Any]], q: RowQuery) -> list[int]:
    def keep(r: dict[str, Any]) -> bool:
        t = r["t"]
        if q.from_ms is not None and (t is None or t < q.from_ms):
            return False
        if q.to_ms is not None and (t is None or t >= q.to_ms):
            return False
        return all(r[k] == v for k, v in q.filters.items())

    # NULL times are the smallest.
    ordered = sorted(
        (r for r in rows if keep(r)), key=lambda r: (r["t"] is not None, r["t"] or 0, r["o"])
    )
    offsets = [r["o"] for r in ordered]
    return offsets[::-1] if q.order == "desc" else offsets


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("bounds", [(None, None), (1_000, None), (None, 3_000), (1_000, 3_001)])
@pytest.mark.parametrize(
    "filters", [{}, {"device_id": "d1"}, {"device_id": "d0", "status": "warn"}]
)
@pytest.mark.parametrize("limit", [1, 3, 100])
def test_paging_matches_a_sort_of_everything(
    store: ResultStore,
    order: str,
    bounds: tuple[int | None, int | None],
    filters: dict[str, str],
    limit: int,
) -> None:
    times: list[int | None] = [
        None,
        2_000,
        1_000,
        1_000,
        3_000,
        None,
        2_000,
        500,
        3_000,
        1_000,
        4_000,
        2_000,
    ]
    store.ensure_table(TENANT, "readings", READINGS)
    append(store, "readings", readings(list(range(len(times))), times))
    q = RowQuery(TENANT, "readings", "ts", bounds[0], bounds[1], filters, order, limit)  # type: ignore[arg-type]
    pages = all_pages(store, q)
    assert all(len(p) <= limit for p in pages)
    got = [o for p in pages for o in p]
    rows = [
        {"o": o, "t": t, "device_id": f"d{o % 3}", "status": "ok" if o % 2 else "warn"}
        for o, t in enumerate(times)
    ]
    assert got == _expected(rows, q)
    assert store.count_rows(q) == len(got)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_paging_returns_every_row_once_in_order_with_appends_between_pages(
    store: ResultStore, data: st.DataObject
) -> None:
    table = f"prop{next(_tables)}"
    store.ensure_table(TENANT, table, READINGS)
    times = data.draw(st.lists(st.one_of(st.none(), st.integers(0, 20)), min_size=0, max_size=40))
    append(store, table, readings(list(range(len(times))), times))
    order = data.draw(st.sampled_from(["asc", "desc"]))
    limit = data.draw(st.integers(1, 7))
    bounded = data.draw(st.booleans())
    q = RowQuery(
        TENANT,
        table,
        "ts",
        0 if bounded else None,
        15 if bounded else None,
        order=order,
        limit=limit,
    )
    rows = [{"o": o, "t": t} for o, t in enumerate(times)]
    expected = _expected(rows, q)
    got: list[int] = []
    cursor, next_offset = None, len(times)
    while True:
        page = store.read_rows(RowQuery(**{**_fields(q), "cursor": cursor}))
        got += page.rows.column("_offset").to_pylist()
        cursor = page.next_cursor
        if cursor is None:
            break
        extra = data.draw(st.lists(st.one_of(st.none(), st.integers(0, 20)), max_size=3))
        append(store, table, readings(list(range(next_offset, next_offset + len(extra))), extra))
        rows += [{"o": next_offset + i, "t": t} for i, t in enumerate(extra)]
        next_offset += len(extra)
    assert len(got) == len(set(got)), "a row came back twice"
    assert [o for o in got if o < len(times)] == expected
    assert got == [o for o in _expected(rows, q) if o in set(got)], "rows out of order"


_tables = itertools.count()


def test_tables_without_offset_page_by_key_or_insertion_order(store: ResultStore) -> None:
    key = ["device_id", "window_start"]
    store.ensure_table(TENANT, "minute", MINUTE, key=key)
    batch = pa.table(
        {
            "device_id": ["c", "a", "b", "a"],
            "window_start": pa.array([0, 0, 0, 60_000], TS),
            "n": [1, 2, 3, 4],
        }
    )
    store.commit(TENANT, ResultWrite("p", {}, upserts={"minute": (batch, key)}))
    for order, want in [("asc", [2, 3, 1, 4]), ("desc", [4, 1, 3, 2])]:
        q = RowQuery(TENANT, "minute", "window_start", order=order, limit=1)  # type: ignore[arg-type]
        got, cursor = [], None
        while True:
            page = store.read_rows(RowQuery(**{**_fields(q), "cursor": cursor}))
            got += page.rows.column("n").to_pylist()
            if (cursor := page.next_cursor) is None:
                break
        assert got == want
    store.ensure_table(
        TENANT, "log", pa.schema([("received_ms", pa.int64()), ("code", pa.string())])
    )
    for i in range(3):
        append(store, "log", pa.table({"received_ms": [5, 5], "code": [f"{i}a", f"{i}b"]}))
    got, cursor = [], None
    while True:
        page = store.read_rows(
            RowQuery(TENANT, "log", "received_ms", from_ms=5, limit=4, cursor=cursor)
        )
        got += page.rows.column("code").to_pylist()
        if (cursor := page.next_cursor) is None:
            break
    assert got == ["0a", "0b", "1a", "1b", "2a", "2b"]


def test_latest_per_key(store: ResultStore) -> None:
    seeded(store, 10)  # devices d0,d1,d2 by offset % 3; times 1000 * (offset // 2)
    latest = store.latest_per_key(TENANT, "readings", ["device_id"], "ts", 2)
    assert latest.column("_offset").to_pylist() == [9, 6, 7, 4, 8, 5]
    assert "_id_hash" not in latest.column_names
    assert latest.schema.field("ts").type == TS
    one = store.latest_per_key(TENANT, "readings", ["device_id", "status"], "ts", 1)
    assert one.num_rows == 6
    only = store.latest_per_key(TENANT, "readings", ["device_id"], "ts", 2, {"device_id": "d1"})
    assert only.column("_offset").to_pylist() == [7, 4]  # d1 holds offsets 1, 4, 7
    append(store, "readings", readings([12], [None], ["d0"]))  # no event time: ranks last
    d0 = store.latest_per_key(TENANT, "readings", ["device_id"], "ts", 9, {"device_id": "d0"})
    assert d0.column("_offset").to_pylist() == [9, 6, 3, 0, 12]
    assert (
        store.latest_per_key(TENANT, "readings", ["device_id"], "ts", 1, {"status": None}).num_rows
        == 0
    )
    with pytest.raises(BadRequest):
        store.latest_per_key(TENANT, "readings", ["nope"], "ts", 1)


def test_id_hashes(store: ResultStore) -> None:
    seeded(store, 5)  # _id_hash = offset + 100, _received_ms = 1000 + offset
    append(
        store,
        "readings",
        readings([5], [1]).set_column(7, "_id_hash", pa.array([None], pa.uint64())),
    )
    assert sorted(store.id_hashes(TENANT, "readings", None).to_pylist()) == [
        100,
        101,
        102,
        103,
        104,
    ]
    assert sorted(store.id_hashes(TENANT, "readings", 1_003).to_pylist()) == [103, 104]
    assert store.id_hashes(TENANT, "readings", None).type == pa.uint64()
    store.ensure_table(TENANT, "minute", MINUTE)
    assert len(store.id_hashes(TENANT, "minute", None)) == 0


def test_rows_by_offset_give_back_what_the_log_held(store: ResultStore) -> None:
    store.ensure_table(TENANT, "readings", READINGS)
    append(store, "readings", readings([5, 3, 4], [3, 1, 2]))
    append(store, "readings", readings([6, 7, 8, 9], [4, 5, 6, 7]))
    got = store.rows_by_offset(TENANT, "readings", 4, 9, max_rows=3)
    assert got.column("_offset").to_pylist() == [4, 5, 6]
    assert got.schema == READINGS  # every column, system ones included, in its own type
    assert store.rows_by_offset(TENANT, "readings", 9, 20, 100).column("_offset").to_pylist() == [9]
    assert store.rows_by_offset(TENANT, "readings", 20, 30, 100).num_rows == 0


def test_delete_before_drops_old_rows_only(store: ResultStore) -> None:
    seeded(store, 10)  # _received_ms = 1000 + offset
    assert store.delete_before(TENANT, "readings", "_received_ms", 1_004) == 4
    assert store.rows_by_offset(TENANT, "readings", 0, 100, 100).column("_offset").to_pylist() == [
        *range(4, 10)
    ]
    assert store.delete_before(TENANT, "readings", "_received_ms", 1_004) == 0
    with pytest.raises(BadRequest):
        store.delete_before(TENANT, "readings", "device_id", 5)


def test_delete_in_drops_the_rows_holding_the_values_only(store: ResultStore) -> None:
    seeded(store, 10)
    devices = store.rows_by_offset(TENANT, "readings", 0, 100, 100).column("device_id")
    gone = {devices[0].as_py(), devices[1].as_py()}
    expected = sum(1 for d in devices.to_pylist() if d in gone)
    values = pa.array([*gone, None, "nobody"])
    assert store.delete_in(TENANT, "readings", "device_id", values) == expected
    left = store.rows_by_offset(TENANT, "readings", 0, 100, 100).column("device_id").to_pylist()
    assert len(left) == 10 - expected and not gone & set(left)
    assert store.delete_in(TENANT, "readings", "device_id", values) == 0
    # values are cast to the column's type; those that cannot be one match nothing
    kept = store.rows_by_offset(TENANT, "readings", 0, 100, 100).column("_offset")[0].as_py()
    assert store.delete_in(TENANT, "readings", "_offset", pa.array([str(kept), "x"])) == 1
    assert kept not in store.rows_by_offset(TENANT, "readings", 0, 100, 100).column("_offset")
    with pytest.raises(BadRequest):
        store.delete_in(TENANT, "readings", "nope", values)


def test_stored_bytes_grow_with_the_tenants_rows_only(store: ResultStore) -> None:
    before = store.stored_bytes(TENANT)
    seeded(store, 200)
    if isinstance(store, DuckDBStore):
        store.sql(TENANT, "SELECT 1", max_rows=1, timeout_s=5)  # nothing to flush; file exists
    assert store.stored_bytes(TENANT) > before
    assert store.stored_bytes("nobody") == 0


# --- sql ----------------------------------------------------------------------


def test_sql_runs_selects_over_the_tenants_tables(store: ResultStore) -> None:
    seeded(store, 10)
    store.ensure_table(TENANT, "minute", MINUTE)
    append(
        store,
        "minute",
        pa.table({"device_id": ["d0", "d1"], "window_start": pa.array([0, 0], TS), "n": [5, 6]}),
    )
    got = store.sql(
        TENANT,
        """WITH hot AS (SELECT device_id, max(temperature) AS t FROM readings GROUP BY device_id)
           SELECT h.device_id, h.t, m.n, row_number() OVER (ORDER BY h.t DESC) AS rank
           FROM hot h LEFT JOIN Minute m USING (device_id) ORDER BY h.device_id""",
        max_rows=100,
        timeout_s=5,
    )
    assert got.to_pylist() == [
        {"device_id": "d0", "t": 9.0, "n": 5, "rank": 1},
        {"device_id": "d1", "t": 7.0, "n": 6, "rank": 3},
        {"device_id": "d2", "t": 8.0, "n": None, "rank": 2},
    ]
    assert not is_truncated(got)


def test_sql_caps_rows_and_says_so(store: ResultStore) -> None:
    seeded(store, 10)
    capped = store.sql(
        TENANT, "SELECT _offset FROM readings ORDER BY _offset", max_rows=4, timeout_s=5
    )
    assert capped.column("_offset").to_pylist() == [0, 1, 2, 3] and is_truncated(capped)
    exact = store.sql(TENANT, "SELECT _offset FROM readings", max_rows=10, timeout_s=5)
    assert exact.num_rows == 10 and not is_truncated(exact)


def test_sql_stops_at_the_timeout(store: ResultStore) -> None:
    seeded(store, 3)
    slow = "SELECT count(*) FROM range(1000000) a, range(1000000) b WHERE a.range + b.range = -1"
    with pytest.raises(QueryError) as err:
        store.sql(TENANT, slow, max_rows=10, timeout_s=0.3)
    assert err.value.code == "query_timeout"
    assert store.sql(
        TENANT, "SELECT count(*) AS n FROM readings", max_rows=1, timeout_s=5
    ).to_pylist() == [{"n": 3}]


SECRET_NAMES = [
    "secret", "SECRET", '"secret"', "t_other__secret", '"t_other__secret"', "main.t_other__secret",
    "memory.main.t_other__secret", "_hw_tables", "_hw_consumers", "_hw.tables", "_hw.consumers",
    "information_schema.columns", "pg_catalog.pg_tables",
]  # fmt: skip


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_sql_never_reaches_another_tenants_table(store: ResultStore, name: str) -> None:
    store.ensure_table("other", "secret", MINUTE)
    store.commit("other", ResultWrite("p", {"t": 1}))
    seeded(store, 2)
    with pytest.raises(QueryError) as err:
        store.sql(TENANT, f"SELECT * FROM {name}", max_rows=10, timeout_s=5)
    assert err.value.code == "unknown_table"
    with pytest.raises(QueryError):  # out of the CTE's scope, the name is a table again
        store.sql(
            TENANT,
            f"SELECT * FROM (WITH {name.split('.')[-1]} AS (SELECT 1) SELECT 1) x, {name}",
            max_rows=10,
            timeout_s=5,
        )


@pytest.mark.parametrize(
    "sql",
    [
        "SHOW TABLES",
        "SHOW ALL TABLES",
        "SELECT table_name AS name FROM information_schema.tables ORDER BY 1",
        "SELECT t.table_name FROM information_schema.tables t WHERE t.table_schema = 'main' ORDER BY 1",
    ],
)
def test_the_catalog_a_query_sees_is_the_tenants_tables(store: ResultStore, sql: str) -> None:
    store.ensure_table("other", "secret", MINUTE)
    seeded(store, 2)
    store.ensure_table(TENANT, "minute", MINUTE)
    found = store.sql(TENANT, sql, max_rows=10, timeout_s=5)
    assert found.column(0).to_pylist() == ["minute", "readings"]
    empty = store.sql("nobody", sql, max_rows=10, timeout_s=5)
    assert empty.num_rows == 0


def test_an_unknown_table_is_told_the_tenants_tables(store: ResultStore) -> None:
    store.ensure_table("other", "secret", MINUTE)
    seeded(store, 2)
    with pytest.raises(QueryError) as err:
        store.sql(TENANT, "SELECT * FROM reading", max_rows=10, timeout_s=5)
    assert err.value.code == "unknown_table"
    assert err.value.status == 400
    assert "readings" in err.value.message
    assert "secret" not in err.value.message


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO readings SELECT * FROM readings",
        "UPDATE readings SET status = 'x'",
        "DELETE FROM readings",
        "CREATE TABLE x AS SELECT 1",
        "DROP TABLE readings",
        "ATTACH '/tmp/x.db' AS x",
        "COPY readings TO '/tmp/x.csv'",
        "PRAGMA database_list",
        "SET threads = 1",
        "INSTALL httpfs",
        "LOAD httpfs",
        "CALL checkpoint()",
        "SELECT 1; SELECT 2",
        "SELECT 1; DROP TABLE readings",
        "DESCRIBE readings",
    ],
)
def test_sql_refuses_everything_but_one_select(store: ResultStore, statement: str) -> None:
    seeded(store, 2)
    with pytest.raises(QueryError) as err:
        store.sql(TENANT, statement, max_rows=10, timeout_s=5)
    assert err.value.code == "read_only"
    assert store.count_rows(RowQuery(TENANT, "readings")) == 2


@pytest.mark.parametrize(
    ("query", "function"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_parquet('x.parquet')", "read_parquet"),
        ("SELECT * FROM read_json_auto('x.json')", "read_json_auto"),
        ("SELECT * FROM read_text('/etc/hostname')", "read_text"),
        ("SELECT * FROM glob('/*')", "glob"),
        ("SELECT * FROM duckdb_tables()", "duckdb_tables"),
        ("SELECT * FROM query_table('t_other__secret')", "query_table"),
        ("SELECT current_setting('threads')", "current_setting"),
        ("SELECT getenv('HOME')", "getenv"),
        ("SELECT * FROM readings, pragma_table_info('readings')", "pragma_table_info"),
    ],
)
def test_sql_refuses_functions_that_reach_outside(
    store: ResultStore, query: str, function: str
) -> None:
    seeded(store, 2)
    with pytest.raises(QueryError) as err:
        store.sql(TENANT, query, max_rows=10, timeout_s=5)
    assert err.value.code == "forbidden_function"
    assert function in err.value.message.lower()


def test_sql_errors_speak_of_the_users_table_names(store: ResultStore) -> None:
    seeded(store, 2)
    with pytest.raises(QueryError) as err:
        store.sql(TENANT, "SELECT no_such_column FROM readings", max_rows=10, timeout_s=5)
    assert err.value.code == "query_error"
    assert "t_acme__" not in err.value.message


def test_updates_set_the_columns_they_carry_on_matching_rows(store: ResultStore) -> None:
    schema = pa.schema([("_offset", pa.int64()), ("state", pa.string()), ("n", pa.int32())])
    store.ensure_table(TENANT, "q", schema)
    append(store, "q", pa.table({"_offset": [0, 1, 2], "state": ["a"] * 3, "n": [0, 0, 0]}, schema))
    change = pa.table({"_offset": [2, 1, 9, 2], "state": ["b", "c", "x", "d"], "n": [1, 1, 1, 2]})
    change = change.cast(schema)
    write = ResultWrite("u", {"t": 1}, updates={"q": (change, ["_offset"])})
    store.commit(TENANT, write)
    store.commit(TENANT, write)  # applying the same update again changes nothing more
    rows = store.read_rows(RowQuery(TENANT, "q")).rows.to_pylist()
    assert rows == [
        {"_offset": 0, "state": "a", "n": 0},
        {"_offset": 1, "state": "c", "n": 1},
        {"_offset": 2, "state": "d", "n": 2},  # the last row of a match wins; 9 matches nothing
    ]
    # Only the carried columns change; NULL is a value like any other.
    nulls = pa.table({"_offset": [0], "state": pa.array([None], pa.string())})
    store.commit(TENANT, ResultWrite("u", {}, updates={"q": (nulls, ["_offset"])}))
    assert store.read_rows(RowQuery(TENANT, "q")).rows.to_pylist()[0] == {
        "_offset": 0, "state": None, "n": 0
    }  # fmt: skip
    with pytest.raises(BadRequest):
        store.commit(TENANT, ResultWrite("u", {}, updates={"q": (nulls, ["nope"])}))
