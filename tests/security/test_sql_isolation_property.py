"""No spelling of another tenant's table or of the store's bookkeeping returns its rows.

Tenant ``bank`` holds marked rows (and consumer offsets and state under a marked
name); tenant ``mallory`` asks SQL of every shape Hypothesis can build over those
names: CTEs that shadow them (recursive or not), subqueries, joins, set operations,
quoting, ASCII case changes and Unicode look-alikes (KELVIN SIGN, long s, fullwidth
letters, combining marks). Each query either fails with a ``QueryError`` or answers
rows without any of the bank's values. Runs against the store in-process (the layer
that holds the wall); ``test_tenant_isolation_http.py`` sends a few through a server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest
from hostile_sql import hostile_queries
from hypothesis import HealthCheck, example, given, settings

from headwater.errors import QueryError
from headwater.store.duckdb import DuckDBStore
from headwater.store.ports import ResultWrite

SECRET = "SECRET-bank-7f3a"
LEDGER = pa.schema([("account", pa.string()), ("amount", pa.int64())])
NOTES = pa.schema([("note", pa.string())])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBStore]:
    root = tmp_path_factory.mktemp("isolation") / "store"
    db = DuckDBStore(root, memory_limit="512MB", threads=1)
    db.ensure_table("bank", "ledger", LEDGER)
    db.ensure_table("bank", "quarantine__ledger", LEDGER)
    secret_rows = pa.table({"account": [SECRET], "amount": [987_654_321]})
    db.commit(
        "bank",
        ResultWrite(
            f"materialize:{SECRET}",
            {f"bank.{SECRET}": 1},
            appends={"ledger": secret_rows, "quarantine__ledger": secret_rows},
            state=SECRET.encode(),
        ),
    )
    db.ensure_table("mallory", "notes", NOTES)
    db.commit("mallory", ResultWrite("m", {"mallory.notes": 1}, appends={"notes": pa.table({"note": ["mine"]})}))  # fmt: skip
    yield db
    db.close()


def assert_nothing_of_the_bank(store: DuckDBStore, sql: str) -> None:
    try:
        found = store.sql("mallory", sql, max_rows=1000, timeout_s=5)
    except QueryError:
        return
    text = repr(found.to_pylist()) + repr(found.column_names)
    assert SECRET not in text and "987654321" not in text, f"{sql!r} leaked {text}"
    # Only the caller's own bookkeeping could be reached, and not even that.
    assert not {"arrow_schema", "key_columns", "offsets", "physical"} & set(found.column_names), sql


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@example(
    "WITH RECURSIVE t_bank__ledger AS (SELECT * FROM t_bank__ledger) SELECT * FROM t_bank__ledger"
)
@example(
    "WITH RECURSIVE _hw_consumers AS (SELECT * FROM _hw_consumers) SELECT * FROM _hw_consumers"
)
@example("WITH RECURSIVE _hw_tables AS (SELECT * FROM _hw_tables) SELECT * FROM _hw_tables")
@example('WITH "t_ban\u212a__ledger" AS (SELECT 1) SELECT * FROM t_bank__ledger')
@example("WITH RECURSIVE ledger AS (SELECT * FROM ledger) SELECT * FROM ledger")
@given(sql=hostile_queries())
def test_no_query_of_another_tenant_returns_its_rows(store: DuckDBStore, sql: str) -> None:
    assert_nothing_of_the_bank(store, sql)


def test_the_callers_own_tables_still_answer(store: DuckDBStore) -> None:
    """The wall does not stop legitimate CTEs, recursion and subqueries."""
    found = store.sql(
        "mallory",
        "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 3) "
        "SELECT n, (SELECT upper(note) FROM NOTES) AS note FROM r ORDER BY n",
        max_rows=10,
        timeout_s=5,
    )
    assert found.to_pylist() == [{"n": i, "note": "MINE"} for i in (1, 2, 3)]
