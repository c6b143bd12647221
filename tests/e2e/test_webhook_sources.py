"""Webhook sources through a real server: signatures, mapping, re-deliveries, pause."""

from __future__ import annotations

import hashlib
import hmac

import orjson

from serverproc import Server

STREAM = {
    "name": "pushes",
    "fields": [
        {"name": "repo", "type": "string", "required": True},
        {"name": "commits", "type": "int", "min": 0},
        {"name": "pusher", "type": "string"},
    ],
}
SOURCE = {
    "name": "gh",
    "kind": "webhook",
    "stream": "pushes",
    "config": {
        "verify": "github",
        "secret": "topsecret",
        "mapping": {"repo": "repository.full_name", "commits": "size", "pusher": "pusher.name"},
    },
}


def delivery(body: dict, delivery_id: str, secret: bytes = b"topsecret") -> tuple[bytes, dict]:
    raw = orjson.dumps(body)
    sig = "sha256=" + hmac.new(secret, raw, hashlib.sha256).hexdigest()
    return raw, {"X-Hub-Signature-256": sig, "X-GitHub-Delivery": delivery_id,
                 "Content-Type": "application/json"}  # fmt: skip


def push(repo: str, size: int) -> dict:
    return {"repository": {"full_name": repo}, "size": size, "pusher": {"name": "ann"}}


def test_signed_deliveries_are_mapped_stored_once_and_counted(server: Server) -> None:
    with server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        created = c.post("/v1/sources", json=SOURCE)
        assert created.status_code == 201, created.text
        assert created.json()["config"]["secret"] == "***"
        raw, headers = delivery(push("acme/api", 3), "d-1")
        first = c.post("/v1/webhooks/gh", content=raw, headers={**headers, "Authorization": ""})
        assert first.status_code == 200, first.text
        assert first.json()["accepted"] == 1
        again = c.post("/v1/webhooks/gh", content=raw, headers=headers)  # a re-delivery
        assert again.status_code == 200 and again.json() == first.json()
        assert again.headers.get("Idempotent-Replayed") == "true"
        raw2, headers2 = delivery(push("acme/web", -1), "d-2")
        bad_row = c.post("/v1/webhooks/gh", content=raw2, headers=headers2).json()
        assert bad_row["rejected"] == 1 and bad_row["errors"][0]["code"] == "below_min"
        rows = c.get("/v1/streams/pushes/events").json()["rows"]
        assert [(r["repo"], r["commits"], r["pusher"]) for r in rows] == [("acme/api", 3, "ann")]
        status = c.get("/v1/sources/gh").json()
        assert (status["rows_in"], status["rows_rejected"], status["position"]) == (1, 1, "d-2")
        assert status["status"] == "running"


def test_bad_missing_or_stale_signatures_are_401_never_stored(server: Server) -> None:
    with server.client() as c:
        spec = {**STREAM, "name": "pushes2"}
        assert c.post("/v1/streams", json=spec).status_code == 201
        src = {**SOURCE, "name": "gh2", "stream": "pushes2"}
        assert c.post("/v1/sources", json=src).status_code == 201
        raw, headers = delivery(push("x/y", 1), "d-9", secret=b"wrong")
        r = c.post("/v1/webhooks/gh2", content=raw, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "bad_signature"
        r = c.post("/v1/webhooks/gh2", content=raw, headers={"Content-Type": "application/json"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_signature"
        odd = {**headers, "X-Hub-Signature-256": "sha256=\u00e9\u00e9"}
        r = c.post("/v1/webhooks/gh2", content=raw, headers={k: v.encode() for k, v in odd.items()})
        assert r.status_code == 401
        assert c.get("/v1/streams/pushes2/events").json()["rows"] == []
        assert c.get("/v1/sources/gh2").json()["refused"] == 3
        assert c.post("/v1/webhooks/nobody", content=raw, headers=headers).status_code == 404
        big = b"{" + b" " * (2 * 1024 * 1024) + b"}"
        assert c.post("/v1/webhooks/gh2", content=big, headers=headers).status_code == 413


def test_pause_resume_delete_and_tenant_isolation(server: Server) -> None:
    with server.client() as c:
        spec = {**STREAM, "name": "pushes3"}
        assert c.post("/v1/streams", json=spec).status_code == 201
        src = {**SOURCE, "name": "gh3", "stream": "pushes3"}
        assert c.post("/v1/sources", json=src).status_code == 201
        assert c.post("/v1/sources/gh3/pause").json()["status"] == "paused"
        raw, headers = delivery(push("p/q", 2), "d-p")
        paused = c.post("/v1/webhooks/gh3", content=raw, headers=headers)
        assert paused.status_code == 503 and int(paused.headers["Retry-After"]) >= 1
        assert c.post("/v1/sources/gh3/resume").json()["status"] == "running"
        assert c.post("/v1/webhooks/gh3", content=raw, headers=headers).json()["accepted"] == 1
        other = c.post("/v1/tenants", json={"name": "hooks_other"}).json()["admin_key"]["key"]
        with server.client(other) as o:
            assert o.get("/v1/sources/gh3").status_code == 404
            assert o.post("/v1/streams", json=spec).status_code == 201
            taken = o.post("/v1/sources", json=src)
            assert taken.status_code == 409 and "default" not in taken.text
        kafka = {"name": "fleet", "kind": "kafka", "stream": "pushes3", "config": {}}
        r = c.post("/v1/sources", json=kafka)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_source_config"
        bad = {**src, "name": "gh4", "config": {"verify": "md5", "secret": "s"}}
        assert c.post("/v1/sources", json=bad).json()["error"]["code"] == "bad_source_config"
        assert c.delete("/v1/sources/gh3").status_code == 200
        assert c.post("/v1/webhooks/gh3", content=raw, headers=headers).status_code == 404
