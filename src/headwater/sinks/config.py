"""What a sink is asked to do: its record and its kind's options, checked at the edge."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from headwater.errors import BadRequest
from headwater.store.ports import check_name

if TYPE_CHECKING:
    from headwater.sinks.ports import Options

KINDS = ("http", "webhook", "nats", "parquet")
M = TypeVar("M", bound=BaseModel)


class HttpConfig(BaseModel):
    """Options of the ``http`` and ``webhook`` kinds (see docs/sinks.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    batch_rows: int = Field(100, ge=1, le=100_000)
    batch_bytes: int = Field(1_000_000, ge=1_000, le=64_000_000)
    batch_age_ms: int = Field(200, ge=0, le=600_000)
    max_concurrency: int = Field(8, ge=1, le=256)
    rate_limit_per_s: float | None = Field(None, gt=0, le=100_000)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(10.0, gt=0, le=300)
    max_attempts: int = Field(20, ge=1, le=1000)
    max_retry_s: float = Field(3600.0, gt=0, le=7 * 86400)
    backoff_base_s: float = Field(0.1, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    success_on_409: bool = False
    secret: str | None = None
    breaker_failures: int = Field(5, ge=1, le=10_000)
    breaker_open_s: float = Field(5.0, gt=0, le=3600)
    max_pending_rows: int = Field(100_000, ge=1, le=10_000_000)
    start: Literal["earliest", "latest"] = "earliest"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return v

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is None:
            return v
        raw = v.removeprefix("whsec_")
        try:
            ok = bool(base64.b64decode(raw + "==", validate=False))
        except (binascii.Error, ValueError):
            ok = False
        if not ok:
            raise ValueError("secret must be base64, optionally prefixed 'whsec_'")
        return v


def parse_sink(data: Any, file_root: Path | None = None) -> tuple[str, str, str, Options]:
    """``{"name", "kind", "from", "config"}`` → its parts, or ``BadRequest`` saying what to fix."""
    if not isinstance(data, dict):
        raise BadRequest(
            'send {"name": ..., "kind": "http", "from": "<table or stream>", "config": {...}}',
            code="invalid_sink",
        )
    name, kind, source = data.get("name"), data.get("kind"), data.get("from")
    if not isinstance(name, str) or not isinstance(source, str):
        raise BadRequest("'name' and 'from' must be strings", code="invalid_sink")
    check_name("sink", name)
    if kind not in KINDS:
        raise BadRequest(
            f"sink kind {kind!r} is not available here; use one of {list(KINDS)}",
            code="unknown_sink_kind",
        )
    return name, kind, source, sink_config(kind, data.get("config", {}), file_root)


def sink_config(kind: str, raw: Any, file_root: Path | None = None) -> Options:
    """The config of a sink of ``kind``; ``file_root`` bounds where file kinds write."""
    if kind == "nats":
        from headwater.sinks.nats import NatsSinkConfig

        return _validated(NatsSinkConfig, raw)
    if kind == "parquet":
        from headwater.sinks.parquet import ParquetConfig, check_root

        return check_root(_validated(ParquetConfig, raw), file_root)
    return http_config(raw)


def http_config(raw: Any) -> HttpConfig:
    return _validated(HttpConfig, raw)


def _validated(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise BadRequest(
            f"sink config {where}: {first['msg']}", code="invalid_sink_config", field=where
        ) from exc
