"""The HTTP edge bounds what one client can hold: headers, slow bodies, connections and
the in-flight budget; duplicate ``Authorization`` headers are refused on every route;
browser pages carry hardening headers. Each test drives a real ``headwater serve``."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from headwater.errors import Overloaded
from headwater.ingest.service import InflightBudget
from serverproc import ADMIN_KEY, READINGS, Server

PER_CLIENT = 40
LIMITS = {
    "HEADWATER_HEADER_TIMEOUT_S": "5",
    "HEADWATER_BODY_TIMEOUT_S": "3",
    "HEADWATER_MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
}
ROW = b'{"device_id": "d1", "ts": "2026-11-21T10:00:00Z", "temperature": 21.5}\n'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("edge") / "data", **LIMITS).start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    """The admin key of a second tenant that has its own ``readings`` stream."""
    with server.client() as c:
        made = c.post("/v1/tenants", json={"name": "other"})
        assert made.status_code == 201, made.text
    key: str = made.json()["admin_key"]["key"]
    with server.client(key) as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
    return key


def connect(server: Server, timeout_s: float = 20.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port))
    s.settimeout(timeout_s)
    return s


def read_answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def error_code(answer: bytes) -> str:
    code: str = orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"]
    return code


def rss_bytes(server: Server) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    kib = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert kib is not None
    return int(kib.group(1)) * 1024


def ingest(server: Server, key: str) -> int:
    with server.client(key) as c:
        r = c.post(
            "/v1/streams/readings/events",
            content=ROW,
            headers={"Content-Type": "application/x-ndjson"},
        )
        return r.status_code


def test_bodies_declared_but_never_sent_hold_nothing_and_time_out(
    server: Server, other_key: str
) -> None:
    slow = []
    for _ in range(4):
        s = connect(server)
        s.sendall(
            b"POST /v1/streams/readings/events HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b"Content-Type: application/x-ndjson\r\nContent-Length: 67108864\r\n\r\n" + ROW[:10]
        )
        slow.append(s)
    try:
        # Every other request is served while the four sockets are open, the other
        # tenant's and the same tenant's alike.
        assert [ingest(server, other_key) for _ in range(5)] == [200] * 5
        assert ingest(server, ADMIN_KEY) == 200
        for s in slow:  # and the stalled bodies are cut off
            answer = read_answer(s)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert error_code(answer) == "body_timeout"
    finally:
        for s in slow:
            s.close()


def test_a_body_trickled_below_the_minimum_rate_is_cut_off(server: Server) -> None:
    s = connect(server)
    with s:
        s.sendall(
            b"POST /v1/streams/readings/events HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + ADMIN_KEY.encode() + b"\r\n"
            b"Content-Type: application/x-ndjson\r\nContent-Length: 100000\r\n\r\n"
        )
        s.settimeout(0.5)
        answer = b""
        deadline = time.monotonic() + 30
        while not answer and time.monotonic() < deadline:
            try:
                s.sendall(b"x" * 16)  # 32 bytes/s: below 1 KiB/s, never idle for 3 s
                answer = s.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert error_code(answer) == "body_timeout"


def test_an_endless_header_is_cut_off_and_memory_stays_bounded(server: Server) -> None:
    before = rss_bytes(server)
    flooded = []
    for _ in range(4):
        s = connect(server, timeout_s=5.0)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Flood: ")
        try:
            for _ in range(512):  # 32 MiB of one header value, never finished
                s.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        flooded.append(s)
    grown = rss_bytes(server) - before
    answers = []
    for s in flooded:
        with s:
            try:
                answers.append(read_answer(s))
            except TimeoutError:
                answers.append(b"still open")
    assert grown < 64 * 1024 * 1024
    for answer in answers:
        # The 431 may be lost to the reset the unread flood causes; the close is not.
        assert answer != b"still open"
        if answer:
            assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
            assert error_code(answer) == "headers_too_large"


def test_too_many_headers_get_431(server: Server) -> None:
    s = connect(server)
    with s:
        fields = b"".join(b"X-H%d: 1\r\n" % i for i in range(150))
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        answer = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert error_code(answer) == "too_many_headers"


def test_unfinished_headers_time_out(server: Server) -> None:
    s = connect(server)
    with s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        answer = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert error_code(answer) == "header_timeout"


def test_connections_per_client_address_are_capped(server: Server) -> None:
    held = [connect(server, timeout_s=3.0) for _ in range(PER_CLIENT + 5)]
    refused = []
    try:
        for s in held[PER_CLIENT:]:
            try:
                refused.append(read_answer(s))
            except TimeoutError:
                refused.append(b"")  # still open: not refused
    finally:
        for s in held:
            s.close()
    assert all(a.startswith(b"HTTP/1.1 503") for a in refused), refused
    assert {error_code(a) for a in refused} == {"too_many_client_connections"}
    deadline = time.monotonic() + 10
    while True:  # the closed connections give their places back
        s = connect(server)
        with s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if read_answer(s).startswith(b"HTTP/1.1 200"):
                break
        assert time.monotonic() < deadline, "a new connection is still refused"


def test_connections_in_all_are_capped(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_MAX_CONNECTIONS="10").start()
    try:
        held = [connect(srv, timeout_s=3.0) for _ in range(13)]
        try:
            refused = []
            for s in held[10:]:
                try:
                    refused.append(read_answer(s))
                except TimeoutError:
                    refused.append(b"")  # still open: not refused
        finally:
            for s in held:
                s.close()
    finally:
        srv.stop()
    assert all(a.startswith(b"HTTP/1.1 503") for a in refused), refused
    assert {error_code(a) for a in refused} == {"too_many_connections"}


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/v1/streams/readings/events"), ("GET", "/v1/streams")]
)
def test_duplicate_authorization_headers_are_refused(
    server: Server, method: str, path: str
) -> None:
    """The ingest edge (plain ASGI) and the framework's routes answer alike."""
    with server.client() as c:
        r = c.request(
            method,
            path,
            content=ROW,
            headers=[
                ("Authorization", f"Bearer {ADMIN_KEY}"),
                ("Authorization", "Bearer not-a-key"),
                ("Content-Type", "application/x-ndjson"),
            ],
        )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "duplicate_authorization"


@pytest.mark.parametrize("path", ["/", "/ui/app.css", "/docs"])
def test_browser_pages_carry_hardening_headers(server: Server, path: str) -> None:
    with server.client() as c:
        r = c.get(path)
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    csp = r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "object-src 'none'" in csp
    if path == "/docs":  # its inline start-up script is allowed by hash, nothing else inline
        script = re.search(rb"<script>(.*?)</script>", r.content, re.DOTALL)
        assert script is not None
        digest = base64.b64encode(hashlib.sha256(script.group(1)).digest()).decode()
        assert f"'sha256-{digest}'" in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    else:
        assert "script-src 'self';" in csp


def test_one_tenant_holding_its_share_leaves_room_for_the_others() -> None:
    budget = InflightBudget(1000, share=0.25)
    with budget.claim("greedy", "k1") as a, budget.claim("greedy", "k2") as b:
        a.take(250)  # alone in flight for its tenant: may pass its share
        with pytest.raises(Overloaded):
            b.take(10)
        with budget.claim("polite", "k3") as c:
            c.take(250)
            assert budget.bytes == 500
    assert budget.bytes == 0
    assert not budget.by_owner


def test_the_connection_cap_stays_below_the_open_files_limit() -> None:
    """A cap the process could not reach would let connections exhaust its files first."""
    script = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (600, 600))\n"
        "from headwater.api.connections import server_options\n"
        "from headwater.settings import Settings\n"
        "print(server_options(Settings()).get('http').limits.max_connections)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert int(out.stdout.split()[-1]) == 600 - 512
