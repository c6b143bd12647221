"""The runner's deadline and row cap, on a bare locked DuckDB connection."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from headwater.errors import QueryError
from headwater.query.runner import connect_locked, run_select
from headwater.store.ports import is_truncated


@pytest.fixture
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    db = connect_locked(":memory:", memory_limit="256MB", threads=2)
    yield db
    db.close()


def test_a_slow_query_is_interrupted_near_its_deadline(conn: duckdb.DuckDBPyConnection) -> None:
    # 10^14 pairs: it ends only because the deadline interrupts it
    with pytest.raises(QueryError) as err:
        run_select(
            conn,
            "SELECT count(*) FROM range(10000000) a, range(10000000) b WHERE a.range * b.range = -1",
            max_rows=1,
            timeout_s=0.2,
        )
    assert err.value.code == "query_timeout"
    assert run_select(conn, "SELECT 1 AS one", max_rows=1, timeout_s=1).to_pylist() == [{"one": 1}]


@pytest.mark.parametrize(
    ("rows", "cap", "truncated"), [(0, 5, False), (5, 5, False), (6, 5, True), (100_000, 10, True)]
)
def test_the_row_cap_cuts_and_marks(
    conn: duckdb.DuckDBPyConnection, rows: int, cap: int, truncated: bool
) -> None:
    got = run_select(conn, f"SELECT * FROM range({rows})", max_rows=cap, timeout_s=5)
    assert got.num_rows == min(rows, cap)
    assert is_truncated(got) is truncated


def test_errors_name_the_users_tables(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("CREATE TABLE t_a__readings (x INT)")
    with pytest.raises(QueryError) as err:
        run_select(
            conn,
            'SELECT y FROM "t_a__readings"',
            max_rows=1,
            timeout_s=5,
            names={"t_a__readings": "readings"},
        )
    assert err.value.code == "query_error"
    assert "t_a__readings" not in err.value.message


def test_the_connection_cannot_reach_files_or_unlock_itself(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    with pytest.raises(duckdb.PermissionException):
        conn.execute("SELECT * FROM read_text('/etc/hostname')")
    with pytest.raises(duckdb.InvalidInputException):
        conn.execute("SET enable_external_access = true")
    local_table = conn.sql("SELECT 1").to_arrow_table()  # noqa: F841 - a Python variable a query must not see
    with pytest.raises(duckdb.CatalogException):
        conn.execute("SELECT * FROM local_table")


def test_a_query_over_the_memory_limit_gets_its_own_code() -> None:
    small = connect_locked(":memory:", memory_limit="32MB", threads=1)
    try:
        with pytest.raises(QueryError) as err:
            run_select(small.cursor(), "SELECT len(l) FROM (SELECT list(i) AS l FROM range(50000000) t(i))",
                       max_rows=10, timeout_s=30)  # fmt: skip
        assert err.value.code == "query_out_of_memory"
        assert "SET" not in err.value.message  # no advice the caller cannot follow
    finally:
        small.close()
