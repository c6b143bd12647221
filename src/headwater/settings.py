"""One typed settings object.

Read from, in rising precedence: defaults, a TOML config file (``HEADWATER_CONFIG`` or
``--config``), ``HEADWATER_*`` environment variables, command-line flags. Every
setting is documented in ``docs/configuration.md`` (a test checks this).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEADWATER_", extra="forbid")

    # server
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, description="TCP port to listen on.")
    data_dir: Path = Field(
        Path("./headwater-data"), description="Where the log, store and catalog live."
    )
    bootstrap_key: str | None = Field(
        None, description="Admin key to create on first start instead of a random one."
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    log_format: str = Field("json", description="Log format: json or console.")
    metrics_deprecated_names: bool = Field(
        False, description="Also serve the metric names deprecated in this release."
    )

    # ingest limits
    max_body_bytes: int = Field(
        64 * 1024 * 1024, description="Largest request body accepted (413 above)."
    )
    max_inflight_bytes: int = Field(
        256 * 1024 * 1024,
        description="Request bytes processed at once across all ingest requests; beyond it ingest answers 503.",
    )
    max_rows_per_request: int = Field(
        100_000, description="Most rows one request may carry (413 above)."
    )
    max_json_depth: int = Field(32, description="Deepest JSON nesting accepted in one event.")
    max_errors_reported: int = Field(
        1000, description="Most per-row errors listed in one ingest answer."
    )
    rate_limit_rows_per_s: float = Field(
        0.0, description="Per-key ingest rate limit in rows/s (0 = off); over it answers 429."
    )
    rate_limit_burst_rows: int = Field(
        1_000_000, description="Burst size of the per-key rate limit, in rows."
    )
    timestamp_min: str = Field(
        "1970-01-01T00:00:00Z",
        description="Earliest event time accepted; older is rejected as absurd.",
    )
    timestamp_max_future: str = Field(
        "1 day",
        description="How far past the receive time an event time may be before it is rejected.",
    )
    idempotency_ttl: str = Field(
        "24 hours", description="How long Idempotency-Key answers are remembered."
    )
    max_inflight_share: float = Field(
        0.25,
        gt=0.0,
        le=1.0,
        description="Share of max_inflight_bytes one tenant, and one key, may hold at once.",
    )
    max_gzip_members: int = Field(
        64, description="Most gzip members one request body may hold (400 above)."
    )
    rule_timeout_s: float = Field(
        2.0, description="Longest the cross-field rules of one ingest request may run."
    )

    # HTTP edge: connections, headers, slow clients, TLS
    max_header_bytes: int = Field(
        64 * 1024, description="Largest request line and headers of one request (431 above)."
    )
    max_headers: int = Field(100, description="Most header fields in one request (431 above).")
    header_timeout_s: float = Field(
        10.0, description="Longest a client may take to send a request's headers (408)."
    )
    body_timeout_s: float = Field(
        30.0, description="Longest pause allowed while a request body arrives (408)."
    )
    body_min_rate_bytes_s: int = Field(
        1024, description="Slowest average rate a request body may arrive at (408 below)."
    )
    max_connections: int = Field(4096, description="Most open client connections in all.")
    max_connections_per_client: int = Field(
        256, description="Most open connections from one client address."
    )
    tls_cert: Path | None = Field(None, description="PEM certificate chain to serve HTTPS with.")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")

    id_filter_bytes: int = Field(
        32 * 1024 * 1024,
        description="Size of each id-bearing stream's event-id filter (about 10 bits per id "
        "keeps lookups off the disk; more ids only cost more disk lookups).",
    )
    id_spill_ids: int = Field(
        262_144, description="Event ids held in memory per generation before they go to disk."
    )
    id_hot_max_ids: int = Field(
        2_000_000,
        description="Most event ids a stream holds in memory; beyond, ingest answers 503.",
    )

    # log
    log_segment_bytes: int = Field(
        64 * 1024 * 1024, description="Size at which a log segment file rolls."
    )
    log_retention: str = Field(
        "7 days", description="How long log entries are kept once materialized into the store."
    )
    fsync: bool = Field(
        True, description="fsync before acknowledging (turn off only for throwaway data)."
    )

    # store and backpressure
    store_batch_rows: int = Field(
        200_000, description="Rows the store writer gathers per transaction."
    )
    store_max_lag_rows: int = Field(
        5_000_000, description="Rows the store may fall behind the log before ingest answers 503."
    )
    query_timeout_s: float = Field(10.0, description="Longest a read-only query may run.")
    query_max_rows: int = Field(100_000, description="Most rows one query answer may hold.")
    duckdb_memory_limit: str = Field(
        "4GB", description="Memory limit of the embedded DuckDB store."
    )
    duckdb_threads: int = Field(
        1,
        description="Threads the embedded DuckDB store may use (1 leaves the other core to ingest).",
    )
    query_memory_limit: str = Field(
        "1GB",
        description="Most memory one ad-hoc query may make the server grow by (query_out_of_memory above).",
    )
    query_max_answer_bytes: str = Field(
        "64MB", description="Largest answer one ad-hoc query may return (answer_too_large above)."
    )
    query_max_value_bytes: str = Field(
        "256KB",
        description="Largest value range() lists, repeat(), lpad(), list_resize() and the like may build in a query (query_too_large above).",
    )
    query_max_sql_chars: int = Field(
        100_000, description="Longest SQL text a query may have (sql_too_long above)."
    )
    query_max_sql_depth: int = Field(
        32,
        description="Deepest nesting of parentheses and CASE a query may have (sql_too_deep above).",
    )
    query_threads: int = Field(8, description="Threads that run ad-hoc queries, for all tenants.")
    query_concurrency_per_tenant: int = Field(
        4,
        description="Queries one tenant may run at once (429 too_many_queries above); kept below query_threads.",
    )
    duckdb_tenant_memory_limit: str = Field(
        "512MB",
        description=(
            "Memory limit of one tenant's DuckDB database, taken from duckdb_memory_limit; when "
            "too little is left for another tenant, its first table or query answers 503."
        ),
    )

    # engine
    checkpoint_interval_s: float = Field(
        1.0,
        description="Longest time between pipeline checkpoints (state, offsets, appended rows).",
    )
    udf_modules: str = Field(
        "",
        description="Comma-separated Python modules imported at start; their @headwater.udf functions can be called in pipeline SQL.",
    )
    pipeline_threads: int = Field(
        2,
        ge=1,
        description="Threads that run every pipeline's cycles, however many pipelines there are.",
    )
    pipeline_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes that run the pipelines' operators, so a server uses more than one core; 0 runs them in the server process.",
    )
    sink_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Worker processes that encode and deliver the rows of http, webhook, kafka and nats sinks, so a server uses more than one core; 0 does it in the server process.",
    )
    source_processes: bool = Field(
        False,
        description="Each pull source reads (its client: MQTT, Kafka, files...) in a process of its own, beside the server.",
    )
    pipeline_commit_threads: int = Field(
        2,
        ge=1,
        description="Threads that write every pipeline's commits to the store (in order per pipeline).",
    )
    idle_timeout: str = Field(
        "30 seconds",
        description=(
            "Default idle timeout of pipelines: after this long without events the watermark advances "
            "with processing time, so windows close on an idle stream ('' turns it off)."
        ),
    )

    # tenant quotas (defaults; an operator sets a tenant's own with PUT /v1/tenants/{name}/quotas)
    quota_streams: int = Field(200, ge=0, description="Streams a tenant may own (0 = no limit).")
    quota_pipelines: int = Field(50, ge=0, description="Pipelines a tenant may own (0 = no limit).")
    quota_reference_tables: int = Field(
        100, ge=0, description="Reference tables a tenant may own (0 = no limit)."
    )
    quota_subscribers: int = Field(
        100,
        ge=0,
        description="Live (SSE) subscriptions a tenant may hold open at once (0 = no limit).",
    )
    quota_ingest_rows_per_s: float = Field(
        0.0,
        ge=0,
        description="Rows/s a tenant may ingest over all its keys (0 = no limit); over it, 429.",
    )
    quota_ingest_bytes_per_s: float = Field(
        0.0,
        ge=0,
        description="Request bytes/s a tenant may ingest over all its keys (0 = no limit); over it, 429.",
    )
    quota_sources: int = Field(50, ge=0, description="Sources a tenant may own (0 = no limit).")
    quota_sinks: int = Field(50, ge=0, description="Sinks a tenant may own (0 = no limit).")
    quota_stored_bytes: int = Field(
        0,
        ge=0,
        description="Bytes a tenant's stored tables may take (0 = no limit); over it ingest answers 429.",
    )
    webhook_max_body_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Largest webhook delivery accepted (413 above); deliveries carry no API key.",
    )
    upload_max_bytes: int = Field(
        10 * 1024 * 1024 * 1024,
        ge=1024,
        description="Largest file accepted by POST /v1/streams/{name}/files (413 above); it is spooled to the data dir, not held in memory.",
    )
    file_source_root: Path | None = Field(
        None,
        description="The only directory (and its subdirectories) a file source may read; default <data_dir>/inbox. Tenant admins create file sources, so nothing outside it is readable.",
    )
    sink_file_root: Path | None = Field(
        None,
        description="The only directory (and its subdirectories) a file sink (kind parquet) may write to; default <data_dir>/exports. Tenant admins create sinks, so nothing outside it is writable.",
    )
    file_chunk_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Bytes of an uploaded NDJSON or CSV file imported (and committed) at once; a crash resumes after the last committed chunk.",
    )
    sse_buffer_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Bytes of events one live subscriber may have waiting; a subscriber further behind is disconnected with a final event saying why.",
    )
    sse_write_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a live subscriber may leave an event unread before it is disconnected.",
    )

    audit_retention: str = Field(
        "365 days", description="How long the audit trail of administrative actions is kept."
    )
    model_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest ONNX model accepted by POST /v1/models (413 above).",
    )

    # demo
    demo_devices: int = Field(50, description="Simulated devices in the demo.")
    demo_rate: float = Field(200.0, description="Simulated events per second in the demo.")
    demo_anomaly_rate: float = Field(
        0.01, description="Share of demo readings far off their device's normal."
    )
    demo_disorder_ms: int = Field(
        2000, description="Demo event times jitter back by up to this many ms."
    )
    demo_late_rate: float = Field(
        0.002, description="Share of demo events minutes in the past (late)."
    )
    demo_malformed_rate: float = Field(
        0.005, description="Share of demo events that fail validation."
    )
    demo_mqtt_url: str | None = Field(
        None,
        pattern=r"^mqtts?://[^/]+$",
        description="An MQTT broker (mqtt://host:1883) the demo publishes a device fleet to and "
        "reads back through an mqtt source; none: nothing MQTT.",
    )

    # tracing (OpenTelemetry)
    tracing_exporter: Literal["none", "otlp", "console"] = Field(
        "none",
        description="Where spans go: none (tracing off), otlp (OTLP over HTTP) or console (stdout).",
    )
    otlp_endpoint: str = Field(
        "http://localhost:4318/v1/traces",
        description="OTLP/HTTP traces endpoint, used when tracing_exporter is otlp.",
    )
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of traces recorded (a caller's sampling decision wins).",
    )
    alert_eval_interval_s: float = Field(
        1.0, gt=0.0, description="Seconds between two evaluations of every alert rule."
    )
    alert_delivery_attempts: int = Field(
        5, ge=1, description="Tries of one alert notification before it is a dead letter."
    )
    alert_retry_base_s: float = Field(
        0.5, gt=0.0, description="First retry delay of a notification (doubles each try)."
    )
    alert_retry_cap_s: float = Field(
        30.0, gt=0.0, description="Longest delay between two tries of a notification."
    )
    alert_history_max_events: int = Field(
        10_000, ge=1, description="History entries kept per alert rule (the oldest go first)."
    )

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def store_dir(self) -> Path:
        """One DuckDB database per tenant: ``store/<tenant>.duckdb``."""
        return self.data_dir / "store"

    @property
    def legacy_store_path(self) -> Path:
        """The single store file of earlier versions, migrated into ``store_dir`` on start."""
        return self.data_dir / "store.duckdb"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.sqlite"

    @property
    def answers_path(self) -> Path:
        return self.data_dir / "answers.sqlite"

    @property
    def file_sources_root(self) -> Path:
        return (self.file_source_root or self.data_dir / "inbox").resolve()

    @property
    def sink_files_root(self) -> Path:
        return (self.sink_file_root or self.data_dir / "exports").resolve()


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the config file, the environment and explicit overrides."""
    path = config_file or (Path(p) if (p := os.environ.get("HEADWATER_CONFIG")) else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            file_values = tomllib.load(fh)
    env_values = Settings().model_dump(exclude_unset=True)
    merged = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
    return Settings(**merged)
