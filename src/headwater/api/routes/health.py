"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os
import tempfile

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import runtime
from headwater.observability import metrics as m
from headwater.observability.exposition import exposition
from headwater.runtime import DEFAULT_TENANT

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> Response:
    """Liveness: the process answers. No key needed."""
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Readiness: data dir writable, log writer alive, store reachable, materializer healthy."""
    authenticate(request)
    p = runtime(request)
    checks: dict[str, dict[str, object]] = {}
    try:
        with tempfile.NamedTemporaryFile(dir=p.settings.data_dir, prefix=".ready-"):
            pass
        checks["data_dir"] = {"ok": True}
    except OSError as exc:
        checks["data_dir"] = {"ok": False, "error": str(exc)}
    log_ok = bool(getattr(p.log, "healthy", True))
    checks["log"] = {"ok": log_ok, "size_bytes": p.log.size_bytes()}
    try:
        p.store.consumer_offsets("default", "ready-probe")
        checks["store"] = {"ok": True}
    except Exception as exc:
        checks["store"] = {"ok": False, "error": str(exc)}
    checks["materializer"] = {"ok": p.materializer.alive and p.materializer.error is None,
                              "error": p.materializer.error}  # fmt: skip
    ok = all(bool(c["ok"]) for c in checks.values())
    return json_response(
        {"status": "ready" if ok else "not_ready", "checks": checks}, 200 if ok else 503
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format: every series for operators (admins of the default tenant),
    the caller's own tenant's series for admins and readers of other tenants."""
    who = authenticate(request)
    who.require("admin", "reader")
    p = runtime(request)
    m.LOG_SIZE_BYTES.set(p.log.size_bytes())
    m.PROCESS_RSS_BYTES.set(_rss_bytes())
    m.INGEST_INFLIGHT_BYTES.set(p.inflight.bytes)
    operator = who.tenant == DEFAULT_TENANT and who.role == "admin"
    body = exposition(None if operator else who.tenant)
    if operator and p.settings.metrics_deprecated_names:
        body += generate_latest(m.DEPRECATED)
    return Response(body, 200, media_type=CONTENT_TYPE_LATEST)


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0
