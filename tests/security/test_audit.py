"""The audit trail of administrative actions, through a real server."""

from __future__ import annotations

import httpx

from serverproc import ADMIN_KEY, TRUST, Server

STREAM = {
    "name": "r",
    "fields": [{"name": "k", "type": "string"}, {"name": "ts", "type": "timestamp"}],
    "event_time": "ts",
}


def client(server: Server, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30, verify=TRUST
    )


def test_admin_actions_are_recorded_with_who_what_when_and_where(server: Server) -> None:
    with client(server) as op:
        tenant = op.post("/v1/tenants", json={"name": "audited"}).json()["admin_key"]
    with client(server, tenant["key"]) as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        writer = c.post("/v1/keys", json={"role": "writer", "name": "w"}).json()
        assert c.post(
            "/v1/pipelines", json={"sql": "CREATE PIPELINE p AS SELECT k FROM r"}
        ).is_success
        assert c.delete("/v1/pipelines/p").is_success
        c.post("/v1/streams/r/events", json={"k": "a", "ts": "2026-12-01T00:00:00Z"})
        c.post("/v1/query", json={"sql": "SELECT 1"})
    with client(server, writer["key"]) as w:
        assert w.post("/v1/keys", json={"role": "admin"}).status_code == 403
    with client(server, "not-a-key") as anon:
        assert anon.delete("/v1/pipelines/p").status_code == 401
    with client(server, tenant["key"]) as c:
        r = c.get("/v1/audit")
        assert r.status_code == 200
        entries = r.json()["entries"]
    actions = [(e["action"], e["status"]) for e in reversed(entries)]
    assert actions == [
        ("POST /v1/streams", 201),
        ("POST /v1/keys", 201),
        ("POST /v1/pipelines", 201),
        ("DELETE /v1/pipelines/{name}", 200),
        ("POST /v1/keys", 403),
    ]  # ingest and queries are data, not administration; the unknown key left nothing
    first = entries[-1]
    assert first["tenant"] == "audited" and first["key_id"] == tenant["id"]
    assert first["role"] == "admin" and first["client"].startswith("127.0.0.1:")
    assert first["target"] == "/v1/streams" and first["request_id"] and first["at"]
    assert entries[0]["key_id"] == writer["id"] and entries[0]["role"] == "writer"
    assert entries[1]["target"] == "/v1/pipelines/p"


def test_tenants_read_their_own_trail_and_operators_read_all(server: Server) -> None:
    with client(server) as op:
        one = op.post("/v1/tenants", json={"name": "one"}).json()["admin_key"]["key"]
        op.post("/v1/tenants", json={"name": "two"})
        with client(server, one) as c:
            c.post("/v1/keys", json={"role": "reader"})
            own = c.get("/v1/audit").json()["entries"]
            assert own and {e["tenant"] for e in own} == {"one"}
            assert c.get("/v1/audit?tenant=default").status_code == 403
            assert c.get("/v1/audit?limit=0").status_code == 400
            assert c.get("/v1/audit?from=yesterday").status_code == 400
        everyone = {e["tenant"] for e in op.get("/v1/audit").json()["entries"]}
        assert {"default", "one"} <= everyone
        only = op.get("/v1/audit?tenant=one").json()["entries"]
        assert {e["tenant"] for e in only} == {"one"}
        future = op.get("/v1/audit?from=2999-01-01T00:00:00Z").json()["entries"]
        assert future == []
