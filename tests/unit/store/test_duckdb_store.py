"""What only the DuckDB store has: a file that outlives the process, real transactions,
concurrent cursors, and a database locked against file access."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from headwater.errors import Conflict, HeadwaterError
from headwater.store.duckdb import DuckDBStore
from headwater.store.ports import ResultWrite, RowQuery

TS = pa.timestamp("ms", tz="UTC")
ROWS = pa.schema([("k", pa.string()), ("ts", TS), ("v", pa.int64()), ("_offset", pa.int64())])
MINUTE = pa.schema([("k", pa.string()), ("window_start", TS), ("n", pa.int64())])


def open_store(path: Path) -> DuckDBStore:
    return DuckDBStore(path / "store", memory_limit="256MB", threads=2)


def rows(start: int, n: int) -> pa.Table:
    offsets = list(range(start, start + n))
    return pa.table(
        {
            "k": [f"k{o % 4}" for o in offsets],
            "ts": pa.array([o * 10 for o in offsets], TS),
            "v": offsets,
            "_offset": offsets,
        }
    )


def minute(keys: list[str], n: list[int]) -> tuple[pa.Table, list[str]]:
    table = pa.table({"k": keys, "window_start": pa.array([0] * len(keys), TS), "n": n})
    return table, ["k", "window_start"]


def test_reopening_keeps_tables_rows_keys_offsets_and_state(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_table("acme", "rows", ROWS)
    store.ensure_table("acme", "minute", MINUTE, key=["k", "window_start"])
    store.commit(
        "acme",
        ResultWrite("p", {"a": 5}, appends={"rows": rows(0, 5)}, upserts={"minute": minute(["x"], [1])}, state=b"s"),
    )  # fmt: skip
    store.ensure_table("acme", "rows", pa.schema([*ROWS, ("extra", pa.string())]))
    store.close()

    store = open_store(tmp_path)
    assert store.table_schema("acme", "rows") == pa.schema([*ROWS, ("extra", pa.string())])
    assert store.count_rows(RowQuery("acme", "rows")) == 5
    assert store.consumer_offsets("acme", "p") == {"a": 5}
    assert store.consumer_state("acme", "p") == b"s"
    store.commit("acme", ResultWrite("p", {"a": 6}, upserts={"minute": minute(["x"], [2])}))
    assert store.read_rows(RowQuery("acme", "minute")).rows.column("n").to_pylist() == [2]
    store.close()


def test_a_failure_inside_the_transaction_rolls_back_every_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(tmp_path)
    store.ensure_table("acme", "rows", ROWS)
    store.ensure_table("acme", "minute", MINUTE, key=["k", "window_start"])
    store.commit(
        "acme", ResultWrite("p", {"a": 1}, upserts={"minute": minute(["x"], [1])}, state=b"s0")
    )

    def fail_after_rows_were_written(cur: duckdb.DuckDBPyConnection, *_: Any) -> None:
        assert cur.execute('SELECT count(*) FROM "rows"').fetchone() == (5,)
        cur.execute("SELECT * FROM no_such_table")  # a real DuckDB error mid-transaction

    monkeypatch.setattr(store._dbs["acme"], "_save_consumer", fail_after_rows_were_written)
    write = ResultWrite(
        "p",
        {"a": 9},
        appends={"rows": rows(0, 5)},
        upserts={"minute": minute(["x"], [7])},
        state=b"s1",
    )
    with pytest.raises(HeadwaterError) as err:
        store.commit("acme", write)
    assert err.value.code == "store_error"
    monkeypatch.undo()
    assert store.count_rows(RowQuery("acme", "rows")) == 0
    assert store.read_rows(RowQuery("acme", "minute")).rows.column("n").to_pylist() == [1]
    assert store.consumer_offsets("acme", "p") == {"a": 1}
    assert store.consumer_state("acme", "p") == b"s0"
    store.commit("acme", write)  # the writer is usable again
    assert store.count_rows(RowQuery("acme", "rows")) == 5
    store.close()


def test_reads_run_while_writes_commit(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_table("acme", "rows", ROWS)
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(40):
                store.commit(
                    "acme",
                    ResultWrite("m", {"t": (i + 1) * 500}, appends={"rows": rows(i * 500, 500)}),
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                seen: list[int] = []
                cursor = None
                while True:
                    page = store.read_rows(RowQuery("acme", "rows", "ts", limit=700, cursor=cursor))
                    seen += page.rows.column("_offset").to_pylist()
                    if (cursor := page.next_cursor) is None:
                        break
                assert seen == list(range(len(seen)))
                store.sql("acme", "SELECT count(*) FROM rows", max_rows=1, timeout_s=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_rows(RowQuery("acme", "rows")) == 20_000
    store.close()


def test_writers_of_different_tables_commit_side_by_side(tmp_path: Path) -> None:
    """A bulk append, upserting pipelines and DDL at once: every write lands, none conflicts."""
    store = open_store(tmp_path)
    store.ensure_table("acme", "raw", ROWS)
    for p in range(3):
        store.ensure_table("acme", f"p{p}", MINUTE, key=["k", "window_start"])
    errors: list[BaseException] = []

    def materialize() -> None:
        try:
            for i in range(20):
                store.commit(
                    "acme",
                    ResultWrite("m", {"t": (i + 1) * 5000}, appends={"raw": rows(i * 5000, 5000)}),
                )
        except BaseException as exc:
            errors.append(exc)

    def pipeline(p: int) -> None:
        try:
            for i in range(60):
                upserts = {f"p{p}": minute([f"k{j}" for j in range(50)], [i] * 50)}
                state = b"s" * 1000 if i % 10 == 0 else None
                store.commit("acme", ResultWrite(f"p{p}", {"t": i}, upserts=upserts, state=state))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=materialize),
        *(threading.Thread(target=pipeline, args=(p,)) for p in range(3)),
    ]
    for t in threads:
        t.start()
    for n in range(5):  # DDL meanwhile: new tables, a widened one
        store.ensure_table("acme", f"extra{n}", MINUTE)
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_rows(RowQuery("acme", "raw")) == 100_000
    assert store.consumer_offsets("acme", "m") == {"t": 100_000}
    for p in range(3):
        found = store.read_rows(RowQuery("acme", f"p{p}", limit=100)).rows
        assert found["n"].to_pylist() == [59] * 50
        assert store.consumer_offsets("acme", f"p{p}") == {"t": 59}
        assert store.consumer_state("acme", f"p{p}") == b"s" * 1000
    store.close()


def test_each_tenant_has_its_own_database_file(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_table("a__b", "c", MINUTE)
    store.ensure_table("a", "b__c", MINUTE, key=["k", "window_start"])  # once both t_a__b__c
    store.commit("a", ResultWrite("p", {"t": 1}, upserts={"b__c": minute(["x"], [1])}))
    assert sorted((tmp_path / "store").glob("*.duckdb")) == [
        tmp_path / "store" / "a.duckdb",
        tmp_path / "store" / "a__b.duckdb",
    ]
    assert store.count_rows(RowQuery("a__b", "c")) == 0
    assert store.consumer_offsets("a__b", "p") == {}
    store.close()


def test_tenants_differing_only_in_case_are_kept_apart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_table("acme", "t", MINUTE)
    with pytest.raises(Conflict) as err:
        store.ensure_table("ACME", "t", MINUTE)  # one file on a case-insensitive file system
    assert err.value.code == "tenant_name_clash"
    store.close()


def test_tenants_share_the_memory_limit(tmp_path: Path) -> None:
    store = DuckDBStore(
        tmp_path / "store", memory_limit="200MiB", threads=1, tenant_memory_limit="80MiB"
    )
    store.ensure_table("a", "t", MINUTE)
    store.ensure_table("b", "t", MINUTE)
    store.ensure_table("c", "t", MINUTE)  # the 40 MiB left
    store.ensure_table("d", "t", MINUTE)  # past the total: the least a database works with
    limits = [
        store._dbs[t]._db.execute("SELECT current_setting('memory_limit')").fetchone()
        for t in "abcd"
    ]
    assert limits == [("80.0 MiB",), ("80.0 MiB",), ("40.0 MiB",), ("32.0 MiB",)]
    store.close()

    # More tenants stored than fit at full size: at start they share the total evenly.
    store = DuckDBStore(
        tmp_path / "store", memory_limit="160MiB", threads=1, tenant_memory_limit="80MiB"
    )
    limits = [
        store._dbs[t]._db.execute("SELECT current_setting('memory_limit')").fetchone()
        for t in "abcd"
    ]
    assert limits == [("40.0 MiB",)] * 4
    store.ensure_table("e", "t", MINUTE)  # nothing left: the least a database works with
    got = store._dbs["e"]._db.execute("SELECT current_setting('memory_limit')").fetchone()
    assert got == ("32.0 MiB",)
    store.close()


def test_the_database_refuses_file_access_and_setting_changes(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    (tmp_path / "x.csv").write_text("a\n1\n")
    store.ensure_table("acme", "rows", ROWS)
    raw = store._dbs["acme"]._db.cursor()  # below the sandbox: the database itself must say no
    with pytest.raises(duckdb.PermissionException):
        raw.execute(f"SELECT * FROM read_csv('{tmp_path / 'x.csv'}')")
    with pytest.raises(duckdb.PermissionException):
        raw.execute(f"ATTACH '{tmp_path / 'other.duckdb'}' AS other")
    with pytest.raises(duckdb.InvalidInputException):
        raw.execute("SET enable_external_access = true")
    raw.close()
    store.close()


def test_sql_runs_in_utc(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.ensure_table("acme", "rows", ROWS)
    store.commit("acme", ResultWrite("m", {}, appends={"rows": rows(0, 1)}))
    got = store.sql(
        "acme",
        "SELECT strftime(date_trunc('day', ts), '%H:%M %z') AS d FROM rows",
        max_rows=1,
        timeout_s=5,
    )
    assert got.to_pylist() == [{"d": "00:00 +00"}]
    store.close()
