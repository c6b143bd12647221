"""The HTTP application: routes over the runtime's services, error handling, middleware."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
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
from headwater.api.routes import (
    admin,
    alerts,
    health,
    ingest,
    models,
    pipelines,
    query,
    sinks,
    sources,
    streams,
    subjects,
    uploads,
)
from headwater.api.routes.ingest import EVENTS_PATH, IngestEdge
from headwater.extensions import Extension, extensions
from headwater.observability import tracing
from headwater.runtime import Runtime

log = structlog.get_logger("headwater.api")


def create_app(
    runtime: Runtime, profile: str = "serve", extra: Sequence[Extension] = ()
) -> FastAPI:
    """Mount the routes over ``runtime``'s services, with the profile's built-in extensions
    (the dashboard; the demo's classic endpoints) and then ``extra`` ones.

    The app starts nothing: the runtime is started and stopped by whoever built it
    (``headwater serve``), around the HTTP server. The lifespan only ends tracing.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await tracing.shutdown()

    app = FastAPI(
        title="Headwater",
        version=__version__,
        description="Real-time data processing: ingest, validate, stream SQL, store and serve events.",
        lifespan=lifespan,
        docs_url=None,  # served from assets inside the package, see headwater.api.docs
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.keys = KeyCache(runtime.catalog)
    tracing.configure(runtime.settings)
    errors.install(app)
    docs.install(app)
    for r in (
        health.router,
        streams.router,
        subjects.router,
        ingest.router,
        query.router,
        admin.router,
        pipelines.router,
        models.router,
        sources.router,
        uploads.router,
        sinks.router,
        alerts.router,
    ):
        app.include_router(r)
    for ext in [*extensions(profile), *extra]:
        ext(app, runtime)
    app.add_middleware(IngestEdge)  # inside RequestContext: request ids, metrics, traces
    app.add_middleware(AuditTrail, catalog=runtime.catalog, clock=runtime.clock)
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
