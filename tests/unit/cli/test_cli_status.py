"""``headwater status`` rendering, from answers shaped like the server's."""

from __future__ import annotations

import io
from typing import Any

import httpx
import orjson
from rich.console import Console

from headwater.cli.status import gather, render

STREAM = {"name": "readings", "version": 2, "fields": [{"name": "a"}, {"name": "b"}],
          "log_end_offset": 1500, "stored_offset": 1200}  # fmt: skip
PIPELINE = {
    "name": "device_minute", "status": "failed", "reason": "division by zero",
    "watermark": "2026-11-21T10:00:00Z",
    "metrics": {"rows_in": 12000, "rows_out": 40, "late_rows": 3, "error_rows": 1,
                "log_lag_rows": 250, "event_time_lag_s": 4.5},
}  # fmt: skip
SOURCE = {"name": "fleet", "kind": "mqtt", "stream": "readings", "status": "backing_off",
          "reason": "ConnectionError: no answer", "position": "42", "rows_in": 4200,
          "rows_rejected": 7, "lag": None,
          "last_error": "row rejected: below_min: seq is below 0"}  # fmt: skip


SINK = {
    "name": "partner", "status": "backing_off", "from": "device_minute", "produced": 1200,
    "delivered": 1100, "dead_lettered": 3, "pending": 97, "lag_seconds": 2.5,
    "breaker": "open", "error_rate": 0.125, "rate_limit_hits": 17, "avg_latency_ms": 148.2,
}  # fmt: skip


def text(info: dict[str, Any]) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200).print(render(info))
    return buf.getvalue()


def server(pipelines: httpx.Response) -> httpx.Client:
    def handler(req: httpx.Request) -> httpx.Response:
        routes = {
            "/health": httpx.Response(200, json={"status": "ok"}),
            "/ready": httpx.Response(503, json={"status": "not_ready", "checks": {
                "store": {"ok": False, "error": "disk full"}, "log": {"ok": True}}}),
            "/v1/streams": httpx.Response(200, json={"streams": [STREAM]}),
            "/v1/pipelines": pipelines,
            "/v1/sinks": httpx.Response(200, json={"sinks": [SINK]}),
            "/v1/sources": httpx.Response(200, json={"sources": [SOURCE]}),
        }  # fmt: skip
        missing = httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
        return routes.get(req.url.path, missing)

    return httpx.Client(base_url="http://hw", transport=httpx.MockTransport(handler))


def test_status_shows_streams_pipelines_and_failing_checks() -> None:
    info = gather(server(httpx.Response(200, json={"pipelines": [PIPELINE]})))
    out = text(info)
    assert "not ready" in out and "store" in out and "disk full" in out
    assert "readings" in out and "1,500" in out and "300" in out  # behind = 1500 - 1200
    assert "device_minute" in out and "failed" in out and "division by zero" in out
    assert "250 rows / 4.5 s" in out and "12,000" in out
    assert "fleet" in out and "backing_off" in out and "no answer" in out and "4,200" in out
    assert "last error" in out and "below_min" in out
    orjson.dumps(info)  # --json prints the same


def test_a_server_without_a_pipeline_api_is_fine() -> None:
    missing = httpx.Response(404, json={"error": {"code": "not_found", "message": "no route"}})
    info = gather(server(missing))
    assert info["pipelines"] is None
    assert "no pipeline API" in text(info)


def test_status_shows_sinks_with_their_counters() -> None:
    out = text(gather(server(httpx.Response(200, json={"pipelines": [PIPELINE]}))))
    assert "Sinks (1)" in out and "partner" in out and "backing_off" in out
    assert "1,100" in out and "97" in out and "open" in out and "12.5%" in out
    assert "148 ms" in out and "2.5 s" in out
