"""OpenTelemetry spans of the ingest path, recorded in-process by the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from headwater.api.app import create_app, front_door
from headwater.observability import tracing
from headwater.runtime import Runtime, build_runtime
from headwater.settings import Settings
from serverproc import ADMIN_KEY, READINGS

EVENTS = [
    {
        "device_id": "d1",
        "ts": "2026-11-21T10:00:00Z",
        "temperature": 21.5,
        "status": "ok",
        "event_id": "e1",
    },
    {"device_id": "d2", "ts": "2026-11-21T10:00:01Z", "temperature": 999.0, "event_id": "e2"},
]


def _log_context_route(app: FastAPI, _: Runtime) -> None:
    @app.get("/test/log-context")
    async def log_context() -> dict[str, object]:
        return dict(structlog.contextvars.get_contextvars())


# The application as built, and behind the server's front door (the events route skips
# FastAPI's middleware there): requests must be traced the same way through both.
@pytest.fixture(params=["app", "front_door"])
async def traced(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[httpx.AsyncClient, InMemorySpanExporter]]:
    platform = build_runtime(Settings(data_dir=tmp_path / "data", bootstrap_key=ADMIN_KEY))
    await platform.start()
    built = create_app(platform, extra=[_log_context_route])
    app = front_door(built) if request.param == "front_door" else built
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://hw", headers=headers
        ) as client:
            assert (await client.post("/v1/streams", json=READINGS)).status_code == 201
            exporter.clear()
            yield client, exporter
    finally:
        tracing.install(None)
        await platform.stop()


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


async def test_request_span_is_the_parent_of_decode_and_log_append(traced) -> None:  # type: ignore[no-untyped-def]
    client, exporter = traced
    r = await client.post("/v1/streams/readings/events", json=EVENTS)
    assert r.status_code == 200 and r.json()["rejected"] == 1
    spans = list(exporter.get_finished_spans())
    request = _one(spans, "POST /v1/streams/{name}/events")
    decode = _one(spans, "ingest.decode")
    append = _one(spans, "ingest.log_append")
    assert request.parent is None
    for child in (decode, append):
        assert child.parent is not None
        assert child.parent.span_id == request.context.span_id
        assert child.context.trace_id == request.context.trace_id
    assert decode.end_time <= append.start_time
    attrs = request.attributes or {}
    assert attrs["http.route"] == "/v1/streams/{name}/events"
    assert attrs["http.response.status_code"] == 200
    assert attrs["headwater.request_id"] == r.headers["x-request-id"]
    assert (decode.attributes or {})["stream"] == "readings"
    assert (append.attributes or {})["entries"] == 2  # accepted rows and quarantined rows


async def test_store_commit_span_from_the_materializer(traced) -> None:  # type: ignore[no-untyped-def]
    client, exporter = traced
    assert (await client.post("/v1/streams/readings/events", json=EVENTS[:1])).status_code == 200
    for _ in range(500):
        commits = [s for s in exporter.get_finished_spans() if s.name == "store.commit"]
        if commits:
            break
        await asyncio.sleep(0.01)
    assert commits, "the materializer committed no traced batch"
    assert (commits[0].attributes or {})["table"] == "readings"
    assert (commits[0].attributes or {})["rows"] == 1


async def test_a_callers_traceparent_is_continued(traced) -> None:  # type: ignore[no-untyped-def]
    client, exporter = traced
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    r = await client.get("/v1/streams", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    assert r.status_code == 200
    request = _one(list(exporter.get_finished_spans()), "GET /v1/streams")
    assert request.context.trace_id == int(trace_id, 16)
    assert request.parent is not None and request.parent.span_id == int(parent_id, 16)


async def test_error_answers_mark_the_span_and_unmatched_routes_are_grouped(traced) -> None:  # type: ignore[no-untyped-def]
    client, exporter = traced
    assert (await client.get("/no/such/route")).status_code == 404
    request = _one(list(exporter.get_finished_spans()), "GET unmatched")
    assert (request.attributes or {})["http.response.status_code"] == 404


async def test_logs_inside_a_request_carry_its_request_id(traced) -> None:  # type: ignore[no-untyped-def]
    client, _ = traced
    r = await client.get("/test/log-context", headers={"X-Request-Id": "req-123"})
    assert r.json() == {"request_id": "req-123"}
    assert structlog.contextvars.get_contextvars() == {}
