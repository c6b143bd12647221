"""The sandbox's rewrite, checked on the SQL text alone (no database)."""

from __future__ import annotations

import pytest

from headwater.errors import QueryError
from headwater.query.sandbox import rewrite_select

TABLES = {"readings": "readings", "minute": "minute"}


def rewrite(sql: str) -> str:
    return rewrite_select(sql, TABLES, schema="main").sql


@pytest.mark.parametrize(
    ("sql", "want"),
    [
        ("SELECT * FROM readings", 'SELECT * FROM main."readings" AS readings'),
        ("FROM readings", 'SELECT * FROM main."readings" AS readings'),
        ("SELECT r.ts FROM Readings r", 'SELECT r.ts FROM main."readings" AS r'),
        (
            "SELECT readings.ts FROM readings JOIN minute USING (device_id)",
            'SELECT readings.ts FROM main."readings" AS readings JOIN main."minute" AS minute USING (device_id)',
        ),
        (
            "WITH readings AS (SELECT 1 AS x) SELECT * FROM readings",
            'WITH "_cte#1" AS (SELECT 1 AS x) SELECT * FROM "_cte#1" AS readings',
        ),
        (
            "SELECT (SELECT max(n) FROM minute) FROM readings",
            'SELECT (SELECT MAX(n) FROM main."minute" AS minute) FROM main."readings" AS readings',
        ),
        (  # a JOIN's ON condition with AND is a condition, not a table function
            "SELECT r.ts FROM readings r JOIN minute m ON r.k = m.k AND r.ts >= m.ts",
            'SELECT r.ts FROM main."readings" AS r JOIN main."minute" AS m ON r.k = m.k AND r.ts >= m.ts',
        ),
        ("SELECT * FROM range(3)", "SELECT * FROM RANGE(0, 3)"),
        ("SELECT * FROM unnest([1, 2])", "SELECT * FROM UNNEST([1, 2])"),
    ],
)
def test_table_references_point_at_physical_tables(sql: str, want: str) -> None:
    assert rewrite(sql) == want


def test_the_tables_a_query_reads_are_reported() -> None:
    select = rewrite_select("SELECT * FROM readings, minute", TABLES)
    assert select.tables == {"readings": "readings", "minute": "minute"}


@pytest.mark.parametrize(
    "sql",
    [
        # A CTE is visible in its own query only; outside it the name is a table again.
        "SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) s, secret",
        # Later CTEs are not visible to earlier ones.
        "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
        # A non-recursive CTE does not see itself.
        "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
    ],
)
def test_cte_names_follow_sql_scoping(sql: str) -> None:
    with pytest.raises(QueryError) as err:
        rewrite(sql)
    assert err.value.code == "unknown_table"


def test_a_recursive_cte_sees_itself() -> None:
    sql = "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r"
    assert rewrite(sql) == (
        'WITH RECURSIVE "_cte#1" AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM "_cte#1" AS r '
        'WHERE n < 3) SELECT * FROM "_cte#1" AS r'
    )


@pytest.mark.parametrize(
    "name", ["t_a__readings", "main.readings", "memory.main.t_b__x", "'/etc/passwd'", "_hw.tables"]
)
def test_physical_qualified_and_file_names_are_unknown(name: str) -> None:
    with pytest.raises(QueryError) as err:
        rewrite(f"SELECT * FROM {name}")
    assert err.value.code == "unknown_table"


@pytest.mark.parametrize("sql", ["SELEC 1", "SELECT (", ""])
def test_unparseable_or_empty_queries_are_refused(sql: str) -> None:
    with pytest.raises(QueryError) as err:
        rewrite(sql)
    assert err.value.code in {"syntax_error", "read_only"}
    assert "\x1b" not in err.value.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT nextval('s')",
        "SELECT getvariable('x')",
        "SELECT * FROM sniff_csv('x')",
        "SELECT * FROM readings WHERE ts > (SELECT max(x) FROM read_parquet('y'))",
        "SELECT * FROM iceberg_scan('s3://b/t')",
    ],
)
def test_functions_that_reach_outside_are_refused_anywhere(sql: str) -> None:
    with pytest.raises(QueryError) as err:
        rewrite(sql)
    assert err.value.code == "forbidden_function"


def test_select_into_is_refused() -> None:
    with pytest.raises(QueryError) as err:
        rewrite("SELECT 1 INTO x")
    assert err.value.code == "read_only"


@pytest.mark.parametrize(
    "sql",
    [
        # Not a UNION: DuckDB binds the inner name to the table, so the sandbox does too.
        "WITH RECURSIVE secret AS (SELECT * FROM secret) SELECT * FROM secret",
        # The anchor of a recursive UNION sees tables, not the CTE itself.
        "WITH RECURSIVE secret AS (SELECT * FROM secret UNION ALL SELECT 1) SELECT * FROM secret",
    ],
)
def test_recursive_ctes_are_scoped_as_duckdb_scopes_them(sql: str) -> None:
    with pytest.raises(QueryError) as err:
        rewrite(sql)
    assert err.value.code == "unknown_table"


def test_a_cte_can_never_shadow_a_table() -> None:
    sql = "WITH readings AS (SELECT 1 AS x) SELECT * FROM (WITH minute AS (SELECT 2) SELECT 1), readings"
    got = rewrite(sql)
    assert got == (
        'WITH "_cte#1" AS (SELECT 1 AS x) SELECT * FROM (WITH "_cte#2" AS (SELECT 2) SELECT 1), '
        '"_cte#1" AS readings'
    )


@pytest.mark.parametrize(
    "name", ["t_ban\u212a", "READINGS\u0301", "\uff52eadings", "ﬁle", "readi\u017fngs"]
)
def test_look_alike_names_are_refused(name: str) -> None:
    with pytest.raises(QueryError) as err:
        rewrite(f'WITH "{name}" AS (SELECT 1) SELECT * FROM readings')
    assert err.value.code == "ambiguous_name"


def test_non_ascii_names_that_fold_alike_everywhere_are_names_like_others() -> None:
    with pytest.raises(QueryError) as err:
        rewrite('SELECT * FROM "données"')
    assert err.value.code == "unknown_table"
    assert rewrite('WITH "données" AS (SELECT 1) SELECT * FROM "données"') == (
        'WITH "_cte#1" AS (SELECT 1) SELECT * FROM "_cte#1" AS "données"'
    )


def test_an_unknown_table_lists_the_tenants_tables() -> None:
    with pytest.raises(QueryError) as err:
        rewrite("SELECT * FROM reading")
    assert err.value.message == (
        "table 'reading' does not exist; this tenant's tables: minute, readings"
    )
    with pytest.raises(QueryError) as err:
        rewrite_select("SELECT * FROM x", {})
    assert "no tables yet" in err.value.message


@pytest.mark.parametrize(
    "sql",
    ["SHOW TABLES", "SELECT table_name FROM information_schema.tables", "SHOW ALL TABLES"],
)
def test_catalog_views_list_the_tenants_tables_as_literals(sql: str) -> None:
    got = rewrite(sql)
    assert "('minute'), ('readings')" in got
    assert "information_schema" not in got
