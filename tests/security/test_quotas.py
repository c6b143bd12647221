"""Per-tenant quotas and bounded live subscribers, through a real server."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from serverproc import ADMIN_KEY, TRUST, Server

OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}


def stream_def(name: str) -> dict[str, object]:
    return {
        "name": name,
        "fields": [
            {"name": "k", "type": "string", "required": True},
            {"name": "ts", "type": "timestamp", "required": True},
            {"name": "pad", "type": "string"},
        ],
        "event_time": "ts",
    }


def ndjson(n: int, pad: int = 0) -> bytes:
    row = {"k": "a", "ts": "2026-12-01T00:00:00Z", "pad": "x" * pad}
    return b"\n".join(orjson.dumps(row) for _ in range(n))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("quotas") / "data",
        HEADWATER_QUOTA_STREAMS="2",
        HEADWATER_QUOTA_PIPELINES="1",
        HEADWATER_QUOTA_SUBSCRIBERS="2",
        HEADWATER_SSE_BUFFER_BYTES="65536",
        HEADWATER_SSE_WRITE_TIMEOUT_S="2",
    ).start()
    yield srv
    srv.stop()


def client(server: Server, key: str = ADMIN_KEY) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=60, verify=TRUST
    )


def new_tenant(server: Server, name: str) -> str:
    with client(server) as c:
        r = c.post("/v1/tenants", json={"name": name})
        assert r.status_code == 201, r.text
        key: str = r.json()["admin_key"]["key"]
        return key


def test_count_quotas_refuse_one_more_and_an_operator_raises_them(server: Server) -> None:
    key = new_tenant(server, "acme")
    with client(server, key) as c:
        for name in ("s1", "s2"):
            assert c.post("/v1/streams", json=stream_def(name)).status_code == 201
        r = c.post("/v1/streams", json=stream_def("s3"))
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "quota_exceeded" and "quota_streams" not in err["message"]
        assert "'streams'" in err["message"]
        assert c.put("/v1/tenants/acme/quotas", json={"streams": 9}).status_code == 403
        assert c.get("/v1/tenants/default/quotas").status_code == 403
        mine = c.get("/v1/tenants/acme/quotas").json()
        assert mine["quotas"]["streams"] == 2 and mine["usage"]["streams"] == 2
    with client(server) as op:
        r = op.put("/v1/tenants/acme/quotas", json={"streams": 3})
        assert r.status_code == 200 and r.json()["quotas"]["streams"] == 3
        bad = op.put("/v1/tenants/acme/quotas", json={"streams": -1})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_quota"
        assert op.put("/v1/tenants/nobody/quotas", json={}).status_code == 404
    with client(server, key) as c:
        assert c.post("/v1/streams", json=stream_def("s3")).status_code == 201
        assert c.post("/v1/streams", json=stream_def("s4")).status_code == 429


def test_pipeline_quota(server: Server) -> None:
    key = new_tenant(server, "pipes")
    with client(server, key) as c:
        assert c.post("/v1/streams", json=stream_def("r")).status_code == 201
        sql = "CREATE PIPELINE {} AS SELECT k, ts FROM r"
        assert c.post("/v1/pipelines", json={"sql": sql.format("p1")}).status_code == 201
        r = c.post("/v1/pipelines", json={"sql": sql.format("p2")})
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert c.get("/v1/pipelines/p2").status_code == 404


def test_ingest_rate_quota_is_per_tenant(server: Server) -> None:
    slow, other = new_tenant(server, "slowpoke"), new_tenant(server, "neighbour")
    with client(server) as op:
        op.put("/v1/tenants/slowpoke/quotas", json={"ingest_rows_per_s": 100})
    headers = {"Content-Type": "application/x-ndjson"}
    for key in (slow, other):
        with client(server, key) as c:
            assert c.post("/v1/streams", json=stream_def("r")).status_code == 201
    with client(server, slow) as c:
        assert c.post("/v1/streams/r/events", content=ndjson(100), headers=headers).is_success
        r = c.post("/v1/streams/r/events", content=ndjson(100), headers=headers)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        assert r.json()["error"]["code"] == "rate_limited"
    with client(server, other) as c:
        for _ in range(3):
            assert c.post("/v1/streams/r/events", content=ndjson(100), headers=headers).is_success


def subscribers(server: Server, tenant: str) -> int:
    with client(server) as op:
        n: int = op.get(f"/v1/tenants/{tenant}/quotas").json()["usage"]["subscribers"]
        return n


def wait_for(check: object, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_subscriber_quota(server: Server) -> None:
    key = new_tenant(server, "watchers")
    with client(server, key) as c:
        assert c.post("/v1/streams", json=stream_def("r")).status_code == 201
        url = "/v1/tables/r/subscribe"
        with c.stream("GET", url) as a, c.stream("GET", url) as b:
            assert a.status_code == b.status_code == 200
            r = c.get(url)
            assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        wait_for(lambda: subscribers(server, "watchers") == 0, "subscriptions to close")
        with c.stream("GET", url) as again:
            assert again.status_code == 200


def test_a_subscriber_that_never_reads_is_disconnected(server: Server, tmp_path: Path) -> None:
    key = new_tenant(server, "stalled")
    with client(server, key) as c:
        assert c.post("/v1/streams", json=stream_def("r")).status_code == 201
        sql = "CREATE PIPELINE copy AS SELECT k, ts, pad FROM r"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(
            f"GET /v1/tables/copy/subscribe HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\n\r\n".encode()
        )
        wait_for(lambda: subscribers(server, "stalled") == 1, "the subscription")
        headers = {"Content-Type": "application/x-ndjson"}
        for _ in range(20):  # ~20 MB of result rows; the socket reads none of them
            r = c.post("/v1/streams/r/events", content=ndjson(10_000, pad=100), headers=headers)
            assert r.is_success, r.text
            if subscribers(server, "stalled") == 0:
                break
        wait_for(lambda: subscribers(server, "stalled") == 0, "the stalled subscriber to go")
        sock.close()


def test_sink_quota(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_QUOTA_SINKS="1").start()
    try:
        with client(srv) as c:
            assert c.post("/v1/streams", json=stream_def("r")).status_code == 201
            sink = {"name": "a", "kind": "http", "from": "r",
                    "config": {"url": "http://127.0.0.1:9/x"}}  # fmt: skip
            assert c.post("/v1/sinks", json=sink).status_code == 201
            r = c.post("/v1/sinks", json={**sink, "name": "b"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
            usage = c.get("/v1/tenants/default/quotas").json()["usage"]
            assert usage["sinks"] == 1
    finally:
        srv.stop()


def test_stored_bytes_quota_stops_ingest_of_that_tenant_only(server: Server) -> None:
    full, other = new_tenant(server, "hoarder"), new_tenant(server, "frugal")
    headers = {"Content-Type": "application/x-ndjson"}
    for key in (full, other):
        with client(server, key) as c:
            assert c.post("/v1/streams", json=stream_def("r")).status_code == 201
    with client(server) as op:
        r = op.put("/v1/tenants/hoarder/quotas", json={"stored_bytes": 1})
        assert r.json()["quotas"]["stored_bytes"] == 1
    with client(server, full) as c:
        r = c.post("/v1/streams/r/events", content=ndjson(10), headers=headers)
        assert r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"
        assert "stored_bytes" in r.json()["error"]["message"]
    with client(server, other) as c:
        assert c.post("/v1/streams/r/events", content=ndjson(10), headers=headers).is_success
    with client(server) as op:
        op.put("/v1/tenants/hoarder/quotas", json={})  # back to the default: no limit
    with client(server, full) as c:
        assert c.post("/v1/streams/r/events", content=ndjson(10), headers=headers).is_success
