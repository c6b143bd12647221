"""OpenTelemetry traces, off by default.

``configure(settings)`` installs a tracer provider when ``tracing_exporter`` is
``otlp`` or ``console``; with ``none`` every helper here returns one shared no-op
context manager (well under a microsecond). Code marks work with :func:`span`::

    from headwater.observability.tracing import span

    with span("pipeline.batch", pipeline="device_minute", rows=batch.num_rows):
        ...

Spans Headwater emits: one per HTTP request (named ``METHOD /route``, the parent of
the rest), ``ingest.decode``, ``ingest.log_append`` and ``store.commit``; pipelines mark
a micro-batch as ``pipeline.batch`` with the same helper. The SDK is imported only when
tracing is turned on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from headwater.settings import Settings

SERVICE_NAME = "headwater"
EXPORTERS = ("none", "otlp", "console")

_NOOP: AbstractContextManager[None] = nullcontext()


class _State:
    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()


def enabled() -> bool:
    return _state.tracer is not None


def span(name: str, **attrs: str | int | float | bool) -> AbstractContextManager[Span | None]:
    """A child span of the current one for the ``with`` block; a no-op when tracing is off."""
    tracer = _state.tracer
    if tracer is None:
        return _NOOP
    return tracer.start_as_current_span(name, attributes=attrs or None)


def configure(settings: Settings) -> None:
    """Set up tracing as the settings ask; replaces (and flushes) any earlier provider."""
    exporter = settings.tracing_exporter
    if exporter == "none":
        install(None)
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from headwater import __version__

    span_exporter: SpanExporter
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        span_exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "tracing_exporter = 'otlp' needs the package opentelemetry-exporter-otlp-proto-http; "
                "install it or set HEADWATER_TRACING_EXPORTER=none"
            ) from exc
        span_exporter = OTLPSpanExporter(endpoint=settings.otlp_endpoint)
    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME, "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(settings.tracing_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    install(provider)


def install(provider: TracerProvider | None) -> None:
    """Use ``provider`` for every span from now on (``None`` turns tracing off).

    Tests pass an SDK provider with an in-memory exporter. The global OpenTelemetry
    provider is left alone, so several apps in one process do not fight over it.
    """
    old = _state.provider
    _state.provider = provider
    _state.tracer = provider.get_tracer("headwater") if provider is not None else None
    if old is not None and old is not provider:
        old.shutdown()


async def shutdown() -> None:
    """Flush pending spans and stop the exporter (at server stop)."""
    provider = _state.provider
    if provider is not None:
        _state.tracer = _state.provider = None
        await asyncio.to_thread(provider.shutdown)


# HTTP ---------------------------------------------------------------------------------


def http_span(scope: Mapping[str, Any], request_id: str) -> AbstractContextManager[Span | None]:
    """The span of one HTTP request; continues a caller's trace sent in ``traceparent``."""
    tracer = _state.tracer
    if tracer is None:
        return _NOOP
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: Iterable[tuple[bytes, bytes]] = scope.get("headers", [])
    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in _TRACE_HEADERS}
    parent = TraceContextTextMapPropagator().extract(carrier) if carrier else None
    method = scope.get("method", "GET")
    return tracer.start_as_current_span(
        method,
        context=parent,
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": method,
            "url.path": scope.get("path", ""),
            "headwater.request_id": request_id,
        },
    )


def end_http_span(sp: Span | None, method: str, route: str, status: int) -> None:
    """Name the request span after its route (known only once routing ran) and record the status."""
    if sp is None:
        return
    from opentelemetry.trace import Status, StatusCode

    sp.update_name(f"{method} {route}")
    sp.set_attribute("http.route", route)
    sp.set_attribute("http.response.status_code", status)
    if status >= 500:
        sp.set_status(Status(StatusCode.ERROR))


_TRACE_HEADERS = (b"traceparent", b"tracestate")
