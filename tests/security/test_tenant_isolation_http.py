"""Tenant isolation (G5) through a real server: two tenants, one of them hostile.

Tenant ``bank`` stores marked rows; tenant ``mallory`` uses its own keys to try to read
them (and the store's bookkeeping) by SQL, to learn their names from errors, the
catalog views or ``/metrics``, and to make its objects share tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hostile_sql import hostile_queries
from hypothesis import HealthCheck, given, settings

from serverproc import Server

SECRET = "SECRET-bank-5c1e"
LEDGER = {
    "name": "ledger",
    "fields": [
        {"name": "account", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "amount", "type": "int"},
    ],
    "event_time": "ts",
}
NOTES = {**LEDGER, "name": "notes"}


class Tenants:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients: list[httpx.Client] = []
        self.admin = self.client(None)
        self.keys: dict[str, str] = {}

    def client(self, key: str | None) -> httpx.Client:
        client = self.server.client(key) if key else self.server.client()
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def create(self, name: str) -> httpx.Client:
        r = self.admin.post("/v1/tenants", json={"name": name})
        assert r.status_code == 201, r.text
        self.keys[name] = r.json()["admin_key"]["key"]
        return self.client(self.keys[name])

    def key(self, client: httpx.Client, role: str) -> httpx.Client:
        r = client.post("/v1/keys", json={"role": role, "name": role})
        assert r.status_code == 201, r.text
        return self.client(r.json()["key"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    server = Server(tmp_path_factory.mktemp("isolation") / "data").start()
    tenants = Tenants(server)
    bank, mallory = tenants.create("bank"), tenants.create("mallory")
    for client, stream in ((bank, LEDGER), (mallory, NOTES)):
        assert client.post("/v1/streams", json=stream).status_code == 201
    row = {"account": SECRET, "ts": "2026-01-01T00:00:00Z", "amount": 987654321}
    r = bank.post("/v1/streams/ledger/events", json=[row, {"account": "x"}])  # one quarantined
    assert r.json()["accepted"] == 1, r.text
    mallory.post("/v1/streams/notes/events", json={"account": "mine", "ts": "2026-01-01T00:00:00Z"})
    yield {
        "server": server, "tenants": tenants, "bank": bank, "mallory": mallory,
        "reader": tenants.key(mallory, "reader"), "writer": tenants.key(mallory, "writer"),
    }  # fmt: skip
    tenants.close()
    server.stop()


def query(client: httpx.Client, sql: str) -> httpx.Response:
    return client.post("/v1/query", json={"sql": sql})


def test_the_bank_reads_its_own_rows(world: dict[str, Any]) -> None:
    r = query(world["bank"], "SELECT account FROM ledger")
    assert r.json()["rows"] == [[SECRET]]


@pytest.mark.parametrize(
    "sql",
    [
        "WITH RECURSIVE t_bank__ledger AS (SELECT * FROM t_bank__ledger) SELECT * FROM t_bank__ledger",
        "WITH RECURSIVE _hw_tables AS (SELECT * FROM _hw_tables) SELECT * FROM _hw_tables",
        "WITH RECURSIVE _hw_consumers AS (SELECT * FROM _hw_consumers) SELECT * FROM _hw_consumers",
        'WITH "t_ban\u212a__ledger" AS (SELECT 1) SELECT * FROM t_bank__ledger',
        "WITH RECURSIVE ledger AS (SELECT * FROM ledger) SELECT * FROM ledger",
        "SELECT * FROM _hw.consumers",
        "SELECT * FROM bank.main.ledger",
    ],
)
def test_a_reader_of_another_tenant_gets_no_row_of_the_bank(
    world: dict[str, Any], sql: str
) -> None:
    r = query(world["reader"], sql)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in {"unknown_table", "ambiguous_name"}
    assert SECRET not in r.text and "987654321" not in r.text
    assert "ledger" not in r.json()["error"]["message"].split(";")[-1]  # not in the hint


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sql=hostile_queries())
def test_generated_hostile_queries_get_no_row_of_the_bank(world: dict[str, Any], sql: str) -> None:
    r = query(world["reader"], sql)
    assert r.status_code in (200, 400), r.text
    assert SECRET not in r.text and "987654321" not in r.text, sql


def test_an_unknown_table_lists_the_callers_tables_only(world: dict[str, Any]) -> None:
    r = query(world["reader"], "SELECT * FROM note")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "unknown_table"
    assert "notes" in error["message"]
    assert "ledger" not in error["message"]


@pytest.mark.parametrize(
    "sql", ["SHOW TABLES", "SELECT table_name FROM information_schema.tables ORDER BY 1"]
)
def test_the_catalog_views_answer_the_callers_tables(world: dict[str, Any], sql: str) -> None:
    r = query(world["reader"], sql)
    assert r.status_code == 200, r.text
    assert [row[0] for row in r.json()["rows"]] == ["notes", "quarantine__notes"]


def test_metrics_show_a_tenant_only_its_own_series(world: dict[str, Any]) -> None:
    everything = world["tenants"].admin.get("/metrics").text
    assert 'tenant="bank"' in everything and 'tenant="mallory"' in everything
    assert "headwater_http_requests_total" in everything
    for client in (world["mallory"], world["reader"]):
        own = client.get("/metrics")
        assert own.status_code == 200
        assert 'tenant="mallory"' in own.text
        assert "bank" not in own.text
        assert "headwater_http_requests_total" not in own.text  # every tenant's traffic
    assert world["writer"].get("/metrics").status_code == 403


def pipeline(client: httpx.Client, name: str, stream: str = "notes") -> httpx.Response:
    sql = f"CREATE PIPELINE {name} AS SELECT account, ts FROM {stream}"
    return client.post("/v1/pipelines", json={"sql": sql})


@pytest.mark.parametrize("name", ["quarantine__notes", "Quarantine__x", "_hw", "_secret"])
def test_internal_prefixes_are_reserved_for_every_kind_of_object(
    world: dict[str, Any], name: str
) -> None:
    mallory = world["mallory"]
    made = [
        mallory.post("/v1/streams", json={**NOTES, "name": name}),
        pipeline(mallory, name),
        mallory.post("/v1/tables", json={"name": name, "fields": [{"name": "k", "type": "string"}], "key": ["k"]}),
    ]  # fmt: skip
    for r in made:
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] in {"reserved_name", "invalid_schema", "invalid_sql"}, (
            r.text
        )
    assert made[0].json()["error"]["code"] == "reserved_name"


def test_no_two_objects_share_a_table(world: dict[str, Any]) -> None:
    mallory = world["mallory"]
    assert pipeline(mallory, "daily").status_code == 201
    r = mallory.post("/v1/streams", json={**NOTES, "name": "daily_late"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "name_taken")
    assert mallory.post("/v1/streams", json={**NOTES, "name": "hourly_errors"}).status_code == 201
    r = pipeline(mallory, "hourly")  # its errors table would be the stream's table
    assert (r.status_code, r.json()["error"]["code"]) == (409, "name_taken")
    r = mallory.post("/v1/streams", json={**NOTES, "name": "NOTES"})
    assert r.status_code == 409


def test_tenants_name_their_objects_freely_and_409s_stay_inside_a_tenant(
    world: dict[str, Any],
) -> None:
    tenants: Tenants = world["tenants"]
    # Once both were the physical table t_a__b__c of one shared file.
    a_b, a = tenants.create("a__b"), tenants.create("a")
    assert a_b.post("/v1/streams", json={**NOTES, "name": "c"}).status_code == 201
    r = a.post("/v1/streams", json={**NOTES, "name": "b__c"})
    assert r.status_code == 201, r.text
    r = world["mallory"].post("/v1/streams", json=LEDGER)  # the bank has one too
    assert r.status_code == 201, r.text
    r = world["mallory"].post("/v1/streams", json=LEDGER)
    assert r.status_code == 409
    assert "bank" not in r.text


def test_tenant_names_differing_only_in_case_are_refused(world: dict[str, Any]) -> None:
    r = world["tenants"].admin.post("/v1/tenants", json={"name": "BANK"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "tenant_exists")
