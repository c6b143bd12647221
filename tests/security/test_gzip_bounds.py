"""Gzip bodies: the number of members is capped and the work is linear in the body."""

from __future__ import annotations

import gzip
from collections.abc import Iterator

import pytest

from headwater.errors import BadRequest
from headwater.ingest.body import inflate
from serverproc import READINGS, Server

ROW = b'{"device_id": "d1", "ts": "2026-11-21T10:00:00Z", "temperature": 21.5}\n'
NDJSON_GZIP = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("gzip") / "data").start()
    with srv.client() as c:
        assert c.post("/v1/streams", json=READINGS).status_code == 201
    yield srv
    srv.stop()


def members(n: int) -> bytes:
    return b"".join(gzip.compress(ROW) for _ in range(n))


def test_a_body_of_many_gzip_members_is_refused(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/streams/readings/events", content=members(65), headers=NDJSON_GZIP)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "too_many_gzip_members"
    assert "64" in r.json()["error"]["message"]


def test_a_body_within_the_member_cap_is_ingested(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/streams/readings/events", content=members(64), headers=NDJSON_GZIP)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 64


def test_members_split_across_input_slices_inflate_whole() -> None:
    # Members far larger than the slice the inflater is fed, and many small ones after.
    big = bytes(range(256)) * 2048
    body = gzip.compress(big) + gzip.compress(big[::-1]) + members(20)
    assert inflate(body, "gzip", 1 << 22, max_members=22) == big + big[::-1] + ROW * 20
    with pytest.raises(BadRequest) as exc:
        inflate(body, "gzip", 1 << 22, max_members=21)
    assert exc.value.code == "too_many_gzip_members"
    with pytest.raises(BadRequest) as exc:
        inflate(body[:-5], "gzip", 1 << 22, max_members=22)
    assert exc.value.code == "malformed_gzip"
