"""The events route's errors, through the plain-ASGI edge and through the FastAPI route alone."""

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from headwater.api import errors
from headwater.api.app import create_app, front_door
from headwater.api.auth import KeyCache
from headwater.api.routes import ingest
from headwater.runtime import build_runtime
from headwater.settings import Settings

KEY = "hw_route_test_key"
STREAM = {"name": "r", "fields": [{"name": "x", "type": "int"}]}
NDJSON = b'{"x": 1}\n{"x": 2}\n'


def route_only(app: FastAPI) -> FastAPI:
    """The FastAPI route as it serves when the edge is not installed."""
    bare = FastAPI()
    bare.state.runtime, bare.state.keys = app.state.runtime, KeyCache(app.state.runtime.catalog)
    errors.install(bare)
    bare.include_router(ingest.router)
    return bare


@pytest.fixture(params=["edge", "route"])
async def client(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    platform = build_runtime(Settings(data_dir=tmp_path / "data", bootstrap_key=KEY))
    await platform.start()
    app = create_app(platform)
    served = front_door(app) if request.param == "edge" else route_only(app)
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hw", headers=headers
        ) as admin:
            assert (await admin.post("/v1/streams", json=STREAM)).status_code == 201
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=served), base_url="http://hw", headers=headers
        ) as c:
            yield c
    finally:
        await platform.stop()


@pytest.mark.parametrize("body", [NDJSON, b'{"x": 1}\r\n{"x": 2}', b"\n" + NDJSON * 40])
async def test_ndjson_sent_as_json_names_the_media_type_to_use(
    client: httpx.AsyncClient, body: bytes
) -> None:
    r = await client.post(
        "/v1/streams/r/events", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "malformed_json"
    assert "send application/x-ndjson for one object per line" in error["message"]


async def test_other_bad_json_keeps_its_syntax_message(client: httpx.AsyncClient) -> None:
    for body in (b'{"x": 1', b'{"x": 1} {"x": 2}', b'nope\n{"x": 2}'):
        r = await client.post(
            "/v1/streams/r/events", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "x-ndjson" not in message
