"""Tracing setup: off by default and free when off; the SDK wired as the settings ask."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import ValidationError

from headwater.observability import tracing
from headwater.observability.tracing import span
from headwater.settings import Settings


@pytest.fixture(autouse=True)
def _tracing_off() -> Iterator[None]:
    tracing.install(None)
    yield
    tracing.install(None)


def settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(data_dir=tmp_path, **kw)  # type: ignore[arg-type]


def test_off_by_default_and_span_is_a_shared_no_op(tmp_path: Path) -> None:
    assert settings(tmp_path).tracing_exporter == "none"
    assert not tracing.enabled()
    assert span("a") is span("b", rows=3)
    with span("pipeline.batch", pipeline="p") as sp:
        assert sp is None


def test_spans_nest_under_the_current_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    with span("pipeline.batch", pipeline="device_minute", rows=10), span("store.commit"):
        pass
    inner, outer = exporter.get_finished_spans()
    assert (inner.name, outer.name) == ("store.commit", "pipeline.batch")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id
    assert dict(outer.attributes or {}) == {"pipeline": "device_minute", "rows": 10}


@pytest.mark.parametrize("exporter", ["console", "otlp"])
def test_configure_installs_a_provider(tmp_path: Path, exporter: str) -> None:
    tracing.configure(
        settings(tmp_path, tracing_exporter=exporter, otlp_endpoint="http://127.0.0.1:9/v1/traces")
    )
    assert tracing.enabled()
    tracing.configure(settings(tmp_path))
    assert not tracing.enabled()


def test_sample_ratio_zero_records_nothing(tmp_path: Path) -> None:
    tracing.configure(settings(tmp_path, tracing_exporter="console", tracing_sample_ratio=0.0))
    with span("ingest.decode") as sp:
        assert sp is not None and not sp.is_recording()


def test_settings_refuse_unknown_exporters_and_ratios(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        settings(tmp_path, tracing_exporter="jaeger")
    with pytest.raises(ValidationError):
        settings(tmp_path, tracing_sample_ratio=1.5)


async def test_shutdown_turns_tracing_off(tmp_path: Path) -> None:
    tracing.configure(settings(tmp_path, tracing_exporter="console"))
    await tracing.shutdown()
    assert not tracing.enabled()
