"""The core contract through HTTP against a real ``headwater serve`` process."""

from __future__ import annotations

import gzip
import io
import itertools
import time
from pathlib import Path

import fastavro
import orjson
import pytest

from serverproc import ADMIN_KEY, READINGS, Server

_seq = itertools.count()


def make_stream(c, name: str | None = None, **over) -> str:  # type: ignore[no-untyped-def]
    name = name or f"readings_{next(_seq)}"
    r = c.post("/v1/streams", json={**READINGS, "name": name, **over})
    assert r.status_code == 201, r.text
    return name


def ev(i: int, **over: object) -> dict[str, object]:
    return {"device_id": f"d{i % 3}", "ts": f"2026-11-21T10:00:{i % 60:02d}Z", "temperature": 20.0 + i,
            "status": "ok", "event_id": f"e{i}", **over}  # fmt: skip


def test_health_needs_no_key_everything_else_does(server: Server) -> None:
    import httpx

    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    r = httpx.get(server.url + "/v1/streams")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_key"
    r = httpx.get(server.url + "/v1/streams", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_key"


def test_create_list_show_stream(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        assert name in [s["name"] for s in c.get("/v1/streams").json()["streams"]]
        got = c.get(f"/v1/streams/{name}").json()
        assert got["event_time"] == "ts" and got["version"] == 1
        assert c.post("/v1/streams", json={**READINGS, "name": name}).status_code == 409
        bad = c.post("/v1/streams", json={**READINGS, "name": "x1", "event_time": "nope"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_schema"
        assert c.get("/v1/streams/missing").json()["error"]["code"] == "unknown_stream"


def test_ingest_every_content_type_and_read_back(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        r = c.post(f"/v1/streams/{name}/events", json=ev(0))
        assert r.status_code == 200, r.text
        assert r.json()["accepted"] == 1
        r = c.post(f"/v1/streams/{name}/events", json=[ev(1), ev(2)])
        assert r.json()["accepted"] == 2
        nd = b"\n".join(orjson.dumps(ev(i)) for i in range(3, 6))
        r = c.post(
            f"/v1/streams/{name}/events",
            content=nd,
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert r.json()["accepted"] == 3
        csv = "device_id,ts,temperature,status,event_id\n" + "\n".join(
            f"d{i % 3},2026-11-21T10:00:{i:02d}Z,{20 + i},ok,e{i}" for i in range(6, 9)
        )
        r = c.post(f"/v1/streams/{name}/events", content=csv, headers={"Content-Type": "text/csv"})
        assert r.json()["accepted"] == 3, r.text
        r = c.post(
            f"/v1/streams/{name}/events", content=gzip.compress(nd.replace(b'"e', b'"g')),
            headers={"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"},
        )  # fmt: skip
        assert r.json()["accepted"] == 3, r.text
        schema = {"type": "record", "name": "R", "fields": [
            {"name": "device_id", "type": "string"}, {"name": "ts", "type": "string"},
            {"name": "temperature", "type": ["null", "double"]}, {"name": "event_id", "type": "string"}]}  # fmt: skip
        buf = io.BytesIO()
        fastavro.writer(
            buf,
            schema,
            [
                {
                    "device_id": "d9",
                    "ts": "2026-11-21T10:01:00Z",
                    "temperature": 1.5,
                    "event_id": "a1",
                }
            ],
        )
        r = c.post(
            f"/v1/streams/{name}/events",
            content=buf.getvalue(),
            headers={"Content-Type": "avro/binary"},
        )
        assert r.json()["accepted"] == 1, r.text
        rows = c.get(f"/v1/streams/{name}/events", params={"limit": 100}).json()
        assert len(rows["rows"]) == 13 and rows["next_cursor"] is None
        ts = [r["ts"] for r in rows["rows"]]
        assert ts == sorted(ts)


def test_per_row_errors_and_quarantine(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        body = [ev(0), ev(1, temperature=999), ev(2, ts="2026-11-21T10:00:00"), ev(3, status="boom"),
                {"ts": "2026-11-21T10:00:00Z"}, ev(5, temperature="hot"), ev(6)]  # fmt: skip
        r = c.post(f"/v1/streams/{name}/events", json=body)
        assert r.status_code == 200
        out = r.json()
        assert out["accepted"] == 2 and out["rejected"] == 5
        codes = {e["row"]: e["code"] for e in out["errors"]}
        assert codes == {
            1: "above_max",
            2: "timestamp_no_zone",
            3: "not_in_enum",
            4: "required",
            5: "wrong_type",
        }
        q = c.get(f"/v1/streams/{name}/quarantine").json()["rows"]
        assert sorted(x["code"] for x in q) == sorted(codes.values())
        assert all(x["raw"] and x["message"] and x["schema_version"] == 1 for x in q)


def test_event_id_dedup_and_idempotency_key(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        r1 = c.post(f"/v1/streams/{name}/events", json=[ev(1), ev(2), ev(2)])
        assert r1.json()["accepted"] == 2 and r1.json()["duplicates"] == 1
        r2 = c.post(f"/v1/streams/{name}/events", json=[ev(1), ev(3)])
        assert r2.json()["accepted"] == 1 and r2.json()["duplicates"] == 1
        hdr = {"Idempotency-Key": "k-1"}
        body = [ev(10, event_id=None), ev(11, event_id=None)]
        a = c.post(f"/v1/streams/{name}/events", json=body, headers=hdr)
        b = c.post(f"/v1/streams/{name}/events", json=body, headers=hdr)
        assert a.json() == b.json() and b.headers.get("idempotent-replayed") == "true"
        # a retried request whose rows are all duplicates still gets a durable answer
        dup_hdr = {"Idempotency-Key": "k-dup"}
        d1 = c.post(f"/v1/streams/{name}/events", json=[ev(1)], headers=dup_hdr)
        assert d1.status_code == 200 and d1.json()["duplicates"] == 1
        assert (
            c.post(f"/v1/streams/{name}/events", json=[ev(1)], headers=dup_hdr).json() == d1.json()
        )
        conflict = c.post(f"/v1/streams/{name}/events", json=[ev(12)], headers=hdr)
        assert (
            conflict.status_code == 409
            and conflict.json()["error"]["code"] == "idempotency_key_reused"
        )
        assert c.get(f"/v1/streams/{name}/events/count").json()["count"] == 5


@pytest.mark.parametrize(
    ("body", "ctype", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"\xff\xfe\x00garbage", "application/x-ndjson", 400, "invalid_encoding"),
        (b"", "application/json", 400, "empty_body"),
        (b"a,b\n1,2", "application/xml", 415, "unsupported_media_type"),
        (b"42", "application/json", 400, "malformed_json"),
    ],
)
def test_request_level_errors(
    server: Server, body: bytes, ctype: str, status: int, code: str
) -> None:
    with server.client() as c:
        name = make_stream(c)
        r = c.post(f"/v1/streams/{name}/events", content=body, headers={"Content-Type": ctype})
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        assert r.json()["error"]["message"]


def test_deep_nesting_and_huge_body(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c, fields=[*READINGS["fields"], {"name": "payload", "type": "json"}])
        deep: object = 1
        for _ in range(200):
            deep = {"a": deep}
        r = c.post(
            f"/v1/streams/{name}/events", json=[ev(1, payload=deep), ev(2, payload={"ok": [1, 2]})]
        )
        assert r.status_code == 200
        assert r.json()["accepted"] == 1 and r.json()["errors"][0]["code"] == "too_deep"
        huge = b"[" + b" " * (65 * 1024 * 1024) + b"]"
        r = c.post(
            f"/v1/streams/{name}/events", content=huge, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


def test_unknown_stream_and_roles_and_revocation(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        assert c.post("/v1/streams/nope/events", json=ev(1)).status_code == 404
        reader = c.post("/v1/keys", json={"role": "reader"}).json()
        writer = c.post("/v1/keys", json={"role": "writer"}).json()
    with server.client(writer["key"]) as w:
        assert w.post(f"/v1/streams/{name}/events", json=ev(1)).status_code == 200
        assert w.get(f"/v1/streams/{name}/events").status_code == 403
        assert w.post("/v1/streams", json={**READINGS, "name": "zz"}).status_code == 403
    with server.client(reader["key"]) as rd:
        assert rd.get(f"/v1/streams/{name}/events").status_code == 200
        assert rd.post(f"/v1/streams/{name}/events", json=ev(2)).status_code == 403
    with server.client() as c:
        assert c.delete(f"/v1/keys/{reader['id']}").status_code == 200
    with server.client(reader["key"]) as rd:
        r = rd.get(f"/v1/streams/{name}/events")
        assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_key"


def test_tenants_are_isolated(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=ev(1))
        t = c.post("/v1/tenants", json={"name": f"acme{next(_seq)}"}).json()
    with server.client(t["admin_key"]["key"]) as other:
        assert other.get(f"/v1/streams/{name}").status_code == 404
        assert other.get(f"/v1/streams/{name}/events").status_code == 404
        assert other.post(f"/v1/streams/{name}/events", json=ev(2)).status_code == 404
        r = other.post("/v1/query", json={"sql": f"SELECT * FROM {name}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_table"
        assert other.post("/v1/tenants", json={"name": "evil"}).status_code == 403


def test_schema_evolution(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=ev(1))
        newer = {**READINGS, "fields": [*READINGS["fields"], {"name": "humidity", "type": "float"}]}
        r = c.put(f"/v1/streams/{name}", json=newer)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
        r = c.post(f"/v1/streams/{name}/events", json=ev(2, humidity=40.5))
        assert r.json()["accepted"] == 1 and r.json()["schema_version"] == 2
        rows = c.get(f"/v1/streams/{name}/events").json()["rows"]
        assert [(x["humidity"], x["_schema_version"]) for x in rows] == [(None, 1), (40.5, 2)]
        bad = {**READINGS, "fields": [f for f in READINGS["fields"] if f["name"] != "status"]}
        r = c.put(f"/v1/streams/{name}", json=bad)
        assert r.status_code == 409 and "status" in r.json()["error"]["message"]


def test_query_and_paging(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(i) for i in range(25)])
        seen, cursor = [], None
        while True:
            params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
            page = c.get(f"/v1/streams/{name}/events", params=params).json()
            seen += [r["event_id"] for r in page["rows"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert sorted(seen) == sorted(f"e{i}" for i in range(25)) and len(seen) == 25
        one = c.get(f"/v1/streams/{name}/events", params={"device_id": "d1"}).json()["rows"]
        assert {r["device_id"] for r in one} == {"d1"}
        rng = c.get(
            f"/v1/streams/{name}/events",
            params={"from": "2026-11-21T10:00:05Z", "to": "2026-11-21T10:00:10Z"},
        )
        assert len(rng.json()["rows"]) == 5
        q = c.post(
            "/v1/query",
            json={"sql": f"SELECT device_id, count(*) AS n FROM {name} GROUP BY 1 ORDER BY 1"},
        ).json()
        assert q["columns"] == ["device_id", "n"] and [r[1] for r in q["rows"]] == [9, 8, 8]
        bad = c.post("/v1/query", json={"sql": f"DELETE FROM {name}"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "read_only"
        latest = c.get(f"/v1/streams/{name}/latest", params={"n": 2}).json()["rows"]
        assert [r["device_id"] for r in latest] == ["d0", "d0", "d1", "d1", "d2", "d2"]
        assert [r["event_id"] for r in latest[:2]] == ["e24", "e21"]  # newest first
        one = c.get(f"/v1/streams/{name}/latest", params={"device_id": "d1"}).json()["rows"]
        assert [r["event_id"] for r in one] == ["e22"]
        bad = c.get(f"/v1/streams/{name}/latest", params={"nope": "x"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_column"


def test_bootstrap_key_is_stored_as_digest(server: Server) -> None:
    raw = (server.data_dir / "catalog.sqlite").read_bytes()
    assert ADMIN_KEY.encode() not in raw


def test_lying_content_length_stores_nothing_and_server_survives(server: Server) -> None:
    import socket

    with server.client() as c:
        name = make_stream(c)
    body = orjson.dumps(ev(1))
    host, port = "127.0.0.1", server.port
    # declares more bytes than it sends, then hangs up
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(
            f"POST /v1/streams/{name}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body) + 500}\r\n\r\n".encode()
            + body
        )
        s.shutdown(socket.SHUT_WR)
        s.recv(1000)
    # declares fewer bytes than it sends: the rest is not a valid next request
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(
            f"POST /v1/streams/{name}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 5\r\n\r\n".encode()
            + body
        )
        first = s.recv(4000)
        assert first.startswith(b"HTTP/1.1 400")
    with server.client() as c:
        assert c.get("/health").status_code == 200
        assert c.get(f"/v1/streams/{name}/events/count").json()["count"] == 0


def test_overload_answers_503_with_retry_after(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_MAX_INFLIGHT_BYTES="1000").start()
    try:
        with srv.client() as c:
            name = make_stream(c)
            # a slow upload holds its declared bytes while it is being read
            import socket

            slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            slow.sendall(
                f"POST /v1/streams/{name}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: 900\r\n\r\n[".encode()
            )
            time.sleep(0.5)
            r = c.post(f"/v1/streams/{name}/events", json=[ev(i) for i in range(5)])
            assert r.status_code == 503 and r.json()["error"]["code"] == "overloaded"
            assert int(r.headers["retry-after"]) >= 1
            slow.close()
            time.sleep(0.5)
            assert c.post(f"/v1/streams/{name}/events", json=ev(1)).json()["accepted"] == 1
    finally:
        srv.stop()


def test_ndjson_sent_as_json_gets_a_hint(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        body = b"\n".join(orjson.dumps(ev(i)) for i in range(3))
        r = c.post(
            f"/v1/streams/{name}/events", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
        assert "send application/x-ndjson for one object per line" in r.json()["error"]["message"]


def test_query_hides_internal_columns_unless_the_query_names_them(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(0), ev(1)])

        def query(sql: str) -> dict[str, object]:
            r = c.post("/v1/query", json={"sql": sql})
            assert r.status_code == 200, r.text
            out: dict[str, object] = r.json()
            return out

        star = query(f"SELECT * FROM {name}")
        assert star["columns"] == [f["name"] for f in READINGS["fields"]]  # type: ignore[index]
        assert star["hidden_columns"] == ["_offset", "_received_ms", "_schema_version", "_id_hash"]
        assert all(len(r) == len(star["columns"]) for r in star["rows"])  # type: ignore[arg-type]
        named = query(f"SELECT _received_ms, * FROM {name} WHERE _offset >= 0")
        assert named["columns"][0] == "_received_ms" and "_offset" in named["columns"]  # type: ignore[index,operator]
        assert "_id_hash" not in named["columns"]  # type: ignore[operator]
        assert query(f"SELECT count(*) AS _n FROM {name}")["columns"] == ["_n"]
        joined = query(f"SELECT a.*, b._offset FROM {name} a JOIN {name} b USING (event_id)")
        assert joined["columns"][-1] == "_offset" and "_received_ms" not in joined["columns"]  # type: ignore[index,operator]
