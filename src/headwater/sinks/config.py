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

M = TypeVar("M", bound=BaseModel)
KINDS = ("http", "webhook", "kafka", "postgres", "nats", "parquet")
IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


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


class KafkaSinkConfig(BaseModel):
    """Options of the ``kafka`` kind (see docs/sinks.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap: str = Field(min_length=1)
    topic: str = Field(min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")
    key_fields: list[str] = Field(default_factory=list)
    batch_rows: int = Field(1000, ge=1, le=100_000)
    batch_bytes: int = Field(8_000_000, ge=1_000, le=64_000_000)
    batch_age_ms: int = Field(100, ge=0, le=600_000)
    max_concurrency: int = Field(8, ge=1, le=256)
    timeout_s: float = Field(30.0, gt=0, le=300)
    max_attempts: int = Field(20, ge=1, le=1000)
    max_retry_s: float = Field(3600.0, gt=0, le=7 * 86400)
    backoff_base_s: float = Field(0.1, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    breaker_failures: int = Field(5, ge=1, le=10_000)
    breaker_open_s: float = Field(5.0, gt=0, le=3600)
    max_pending_rows: int = Field(100_000, ge=1, le=10_000_000)
    start: Literal["earliest", "latest"] = "earliest"
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        own = {"bootstrap.servers", "enable.idempotence", "transactional.id"} & set(v)
        if own:
            raise ValueError(f"options may not set {', '.join(sorted(own))}")
        return v


class PostgresConfig(BaseModel):
    """Options of the ``postgres`` kind: upsert by ``key`` into ``table`` (see docs/sinks.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dsn: str
    password: str | None = None
    table: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    key: list[str] = Field(min_length=1)
    create_table: bool = True
    progress_table: str = Field("headwater_sink_progress", pattern=IDENT)
    batch_rows: int = Field(50_000, ge=1, le=1_000_000)
    batch_age_ms: int = Field(200, ge=0, le=600_000)
    copy_new_keys: bool = True
    synchronous_commit: bool = True
    backoff_base_s: float = Field(0.2, gt=0, le=60)
    backoff_max_s: float = Field(30.0, gt=0, le=3600)
    breaker_failures: int = Field(5, ge=1, le=10_000)
    breaker_open_s: float = Field(5.0, gt=0, le=3600)
    start: Literal["earliest", "latest"] = "earliest"

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: str) -> str:
        from psycopg.conninfo import conninfo_to_dict

        try:
            conninfo_to_dict(v)
        except Exception as exc:
            raise ValueError(
                f"not a PostgreSQL connection string ({exc}); e.g. 'host=db dbname=app user=hw'"
            ) from exc
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: list[str]) -> list[str]:
        import re

        bad = [k for k in v if not re.match(IDENT, k)]
        if bad:
            raise ValueError(f"key columns are plain column names, not {bad}")
        return v


def parse_sink(
    data: Any, file_root: Path | None = None
) -> tuple[str, str, str, Options | PostgresConfig]:
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
    config = sink_config(kind, data.get("config", {}), file_root)
    if isinstance(config, KafkaSinkConfig):
        from headwater.sinks.kafka import check_client

        check_client(config)
    return name, kind, source, config


def sink_config(kind: str, raw: Any, file_root: Path | None = None) -> Options | PostgresConfig:
    """The config of a sink of ``kind``, or ``BadRequest`` saying what to fix;
    ``file_root`` bounds where file kinds write."""
    if kind == "nats":
        from headwater.sinks.nats import NatsSinkConfig

        return _validated(NatsSinkConfig, raw)
    if kind == "parquet":
        from headwater.sinks.parquet import ParquetConfig, check_root

        return check_root(_validated(ParquetConfig, raw), file_root)
    if kind == "kafka":
        return _validated(KafkaSinkConfig, raw)
    if kind == "postgres":
        return _validated(PostgresConfig, raw)
    return http_config(raw)


def http_config(raw: Any) -> HttpConfig:
    return _validated(HttpConfig, raw)


def kafka_config(raw: Any) -> KafkaSinkConfig:
    return _validated(KafkaSinkConfig, raw)


def _validated(model: type[M], raw: Any) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise BadRequest(
            f"sink config {where}: {first['msg']}", code="invalid_sink_config", field=where
        ) from exc
