"""The query caps on a bare locked DuckDB connection: text checks, parse deadline,
bounded value-building calls, memory watcher and answer bytes."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.errors import QueryError
from headwater.query.guarded import encode_answer
from headwater.query.limits import QueryBudget, QueryLimits, check_sql_text, parse_bytes
from headwater.query.runner import connect_locked, run_select
from headwater.query.sandbox import rewrite_select

LIMITS = QueryLimits(timeout_s=30, memory_bytes=200 * 1024**2, max_value_bytes=10_000)


@pytest.fixture
def conn() -> Iterator[duckdb.DuckDBPyConnection]:
    db = connect_locked(":memory:", memory_limit="4GB", threads=1)
    yield db
    db.close()


def run(conn: duckdb.DuckDBPyConnection, sql: str, limits: QueryLimits = LIMITS) -> pa.Table:
    budget = QueryBudget.start(limits)
    select = budget.parse(sql, lambda text: rewrite_select(text, {}, transform=budget.transform))
    return run_select(conn, select.sql, max_rows=100, timeout_s=limits.timeout_s, budget=budget)


def code_of(conn: duckdb.DuckDBPyConnection, sql: str, limits: QueryLimits = LIMITS) -> str:
    with pytest.raises(QueryError) as err:
        run(conn, sql, limits)
    return err.value.code


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT " + "1," * 60_000 + "1", "sql_too_long"),
        ("SELECT " + "(" * 33 + "1" + ")" * 33, "sql_too_deep"),
        ("SELECT " + "[" * 33 + "1" + "]" * 33, "sql_too_deep"),
        ("SELECT " + "CASE WHEN true THEN " * 33 + "1" + " END" * 33, "sql_too_deep"),
        ("SELECT " + " OR ".join(["true"] * 502), "sql_too_deep"),
    ],
)
def test_the_text_checks_refuse_before_parsing(sql: str, code: str) -> None:
    with pytest.raises(QueryError) as err:
        check_sql_text(sql, QueryLimits())
    assert err.value.code == code


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT '((((((((((((((((((((((((((((((((((((' AS s",  # parentheses in a string
        'SELECT 1 AS "((((((((((((((((((((((((((((((((((((("',
        "SELECT 1 -- ((((((((((((((((((((((((((((((((((((((((\n",
        "SELECT " + " + ".join(["1"] * 400),
        "SELECT " + "(" * 20 + "1" + ")" * 20,
    ],
)
def test_the_text_checks_let_ordinary_sql_through(
    conn: duckdb.DuckDBPyConnection, sql: str
) -> None:
    check_sql_text(sql, QueryLimits())
    assert run(conn, sql).num_rows == 1


_atoms = st.sampled_from(["1", "x", "'s'", "abs(1)", "NULL"])
_expressions = st.recursive(
    _atoms,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"{a} + {b}", inner, inner),
        st.builds(lambda a: f"({a})", inner),
        st.builds(lambda a: f"abs({a})", inner),
        st.builds(lambda a, b: f"CASE WHEN {a} THEN {b} END", inner, inner),
        st.builds(lambda a, n: "(" * n + a + ")" * n, inner, st.integers(1, 40)),
        st.builds(lambda a, n: " AND ".join([a] * n), inner, st.integers(1, 700)),
    ),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(_expressions)
def test_no_shape_of_sql_escapes_as_a_recursion_error(expression: str) -> None:
    budget = QueryBudget.start(QueryLimits(timeout_s=30))
    try:
        budget.parse(
            f"SELECT {expression}", lambda s: rewrite_select(s, {}, transform=budget.transform)
        )
    except QueryError as exc:
        assert exc.code in ("sql_too_deep", "sql_too_long", "syntax_error", "query_timeout")


def test_parsing_counts_against_the_deadline() -> None:
    values = ", ".join(f"'v{i:06d}'" for i in range(7_000))
    budget = QueryBudget.start(QueryLimits(timeout_s=0.01))
    with pytest.raises(QueryError) as err:
        budget.parse(f"SELECT 1 WHERE 1 IN ({values})", lambda s: rewrite_select(s, {}))
    assert err.value.code == "query_timeout"


def test_lists_and_padding_keep_their_meaning(conn: duckdb.DuckDBPyConnection) -> None:
    got = run(
        conn,
        "SELECT range(4) AS a, range(1, 7, 2) AS b, generate_series(1, 3) AS c, range(0) AS d, "
        "repeat('ab', 2) AS e, repeat([1], 2) AS f, lpad('7', 3, '0') AS g, rpad('7', 3, '.') AS h, "
        "list_resize([1], 2, 0) AS i, printf('%3d', 5) AS j",
    ).to_pylist()
    assert got == [
        {"a": [0, 1, 2, 3], "b": [1, 3, 5], "c": [1, 2, 3], "d": [], "e": "abab", "f": [1, 1],
         "g": "007", "h": "7..", "i": [1, 0], "j": "  5"}
    ]  # fmt: skip


def test_a_range_per_row_and_an_unnamed_column(conn: duckdb.DuckDBPyConnection) -> None:
    got = run(conn, "SELECT x, range(x) FROM (VALUES (1), (2)) t(x) ORDER BY x")
    assert got.column(1).to_pylist() == [[0], [0, 1]]
    assert got.column_names[0] == "x" and "range" in got.column_names[1].lower()
    lists = "SELECT range(TIMESTAMP '2020-01-01', TIMESTAMP '2020-01-02', INTERVAL 12 HOUR) AS t, "
    got = run(conn, lists + "list_transform([1, 2], y -> range(y)) AS l, range(5, 0, -2) AS d")
    assert [len(got["t"][0].as_py()), got["l"][0].as_py(), got["d"][0].as_py()] == [2, [[0], [0, 1]], [5, 3, 1]]  # fmt: skip
    largest = LIMITS.max_value_bytes // 8
    assert run(conn, f"SELECT len(range({largest})) AS n").to_pylist() == [{"n": largest}]
    assert code_of(conn, f"SELECT range({largest + 1})") == "query_too_large"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat('x', 20000)",
        "SELECT repeat(repeat('x', 200), 200)",  # the size is the product, not the count
        "SELECT lpad('', 20000, 'x')",
        "SELECT list_resize([1], 20000)",
        "SELECT bar(1, 0, 10, 20000)",
        "SELECT printf('%20000d', 1)",
        "SELECT printf(x, 1) FROM (VALUES ('%d')) t(x)",
        "SELECT range(100000000)",
        "SELECT generate_series(0, -100000000, -1)",
        "SELECT len(range(x)) FROM (VALUES (3), (100000000)) t(x)",
        "SELECT range(TIMESTAMP '2020-01-01', TIMESTAMP '2030-01-01', INTERVAL 1 MINUTE)",
        "SELECT list_transform([1, 100000000], y -> range(y))",
    ],
)
def test_one_big_value_is_refused_before_it_is_built(
    conn: duckdb.DuckDBPyConnection, sql: str
) -> None:
    assert code_of(conn, sql) == "query_too_large"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT string_agg(repeat('x', 1000), '') FROM range(1000000)",
        "SELECT len(list(i)) FROM range(100000000) t(i)",
    ],
)
def test_growth_past_the_memory_cap_stops_the_query(
    conn: duckdb.DuckDBPyConnection, sql: str
) -> None:
    assert code_of(conn, sql) == "query_out_of_memory"
    assert run(conn, "SELECT 1 AS one").to_pylist() == [{"one": 1}]  # the cursor is usable


def test_an_answer_over_the_byte_cap_is_refused(conn: duckdb.DuckDBPyConnection) -> None:
    small = QueryLimits(timeout_s=30, max_answer_bytes=100_000)
    assert code_of(conn, "SELECT repeat('x', 1000) FROM range(1000)", small) == "answer_too_large"
    assert run(conn, "SELECT repeat('x', 1000) FROM range(50)", small).num_rows == 50


def test_the_json_answer_is_capped_and_keeps_duplicate_columns() -> None:
    table = pa.table([pa.array([1, 2]), pa.array(["a", "b"])], names=["v", "v"])
    body = encode_answer(table, True, QueryBudget.start(LIMITS), orjson.dumps)
    assert orjson.loads(body) == {"columns": ["v", "v"], "rows": [[1, "a"], [2, "b"]], "truncated": True}  # fmt: skip
    empty = encode_answer(table.slice(0, 0), False, QueryBudget.start(LIMITS), orjson.dumps)
    assert orjson.loads(empty)["rows"] == []
    wide = pa.table({"s": ["x" * 1000] * 200})
    tight = QueryBudget.start(QueryLimits(max_answer_bytes=50_000))
    with pytest.raises(QueryError) as err:
        encode_answer(wide, False, tight, orjson.dumps)
    assert err.value.code == "answer_too_large"


@pytest.mark.parametrize(
    ("text", "size"),
    [("1GB", 1024**3), ("256MB", 256 * 1024**2), ("2gib", 2 * 1024**3), ("512", 512)],
)
def test_sizes_read_like_duckdb_settings(text: str, size: int) -> None:
    assert parse_bytes(text) == size
