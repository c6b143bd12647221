"""The HTTP application: routes, error handling, middleware, lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from headwater import __version__
from headwater.api import docs, errors
from headwater.api.audit import AuditTrail
from headwater.api.auth import KeyCache
from headwater.api.edge import EdgeGuard
from headwater.api.middleware import RequestContext
from headwater.api.routes import admin, health, ingest, query, streams, subjects
from headwater.api.routes.ingest import EVENTS_PATH, IngestEdge
from headwater.observability import tracing
from headwater.services import Platform

Extension = Callable[[FastAPI, Platform], None]
log = structlog.get_logger("headwater.api")


HOUSEKEEPING_S = 30.0


async def _housekeeping(platform: Platform) -> None:
    while True:
        await asyncio.sleep(HOUSEKEEPING_S)
        try:
            await asyncio.to_thread(platform.housekeeping)
        except Exception:
            log.exception("housekeeping_failed")


def create_app(platform: Platform, extensions: list[Extension] | None = None) -> FastAPI:
    """Build the app around a running platform; ``extensions`` add routes (engine, demo, UI)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for hook in app.state.on_start:
            await hook()
        chores = asyncio.create_task(_housekeeping(platform), name="housekeeping")
        try:
            yield
        finally:
            chores.cancel()
            for hook in reversed(app.state.on_stop):
                await hook()
            await platform.close()

    app = FastAPI(
        title="Headwater",
        version=__version__,
        description="Real-time data processing: ingest, validate, stream SQL, store and serve events.",
        lifespan=lifespan,
        docs_url=None,  # served from assets inside the package, see headwater.api.docs
        redoc_url=None,
    )
    app.state.platform = platform
    app.state.keys = KeyCache(platform.catalog)
    app.state.on_start = []
    app.state.on_stop = []
    tracing.configure(platform.settings)
    app.state.on_stop.append(tracing.shutdown)
    errors.install(app)
    docs.install(app)
    for r in (
        health.router,
        streams.router,
        subjects.router,
        ingest.router,
        query.router,
        admin.router,
    ):
        app.include_router(r)
    for ext in extensions or []:
        ext(app, platform)
    app.add_middleware(IngestEdge)  # inside RequestContext: request ids, metrics, traces
    app.add_middleware(AuditTrail, catalog=platform.catalog, clock=platform.clock)
    app.add_middleware(EdgeGuard)  # one Authorization header, hardened browser pages
    app.add_middleware(RequestContext)
    return app


def front_door(app: FastAPI) -> ASGIApp:
    """What the server runs: the events route goes straight to ``IngestEdge``.

    Inside the application the edge still sits behind FastAPI's own middleware (error
    pages, telemetry, body limits), which wraps every send; the hottest route needs
    none of it, as the edge answers its own errors. Every other request, and the
    lifespan, go to the application unchanged.
    """
    hot = RequestContext(EdgeGuard(IngestEdge(app)))

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and EVENTS_PATH.fullmatch(scope["path"])
        ):
            scope["app"] = app
            await hot(scope, receive, send)
        else:
            await app(scope, receive, send)

    return serve
