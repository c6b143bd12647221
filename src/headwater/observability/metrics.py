"""Every Prometheus metric Headwater exports, declared in one place.

Names follow ``headwater_<subsystem>_<what>_<unit>``. Each one is documented in
``docs/metrics.md``; a test fails when one is not.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

# ingest
INGEST_ROWS = Counter(
    "headwater_ingest_rows_total",
    "Rows received, by stream and outcome (accepted, rejected, duplicate).",
    ["tenant", "stream", "outcome"],
)
INGEST_BYTES = Counter(
    "headwater_ingest_bytes_total", "Request body bytes received.", ["tenant", "stream"]
)
INGEST_REQUESTS = Counter(
    "headwater_ingest_requests_total",
    "Ingest requests, by answer status.",
    ["tenant", "stream", "status"],
)
INGEST_DECODE_SECONDS = Histogram(
    "headwater_ingest_decode_seconds",
    "Time to decode and validate one request body.",
    buckets=LATENCY_BUCKETS,
)
QUARANTINE_ROWS = Counter(
    "headwater_quarantine_rows_total",
    "Rows sent to quarantine, by reason code.",
    ["tenant", "stream", "code"],
)
INGEST_INFLIGHT_BYTES = Gauge(
    "headwater_ingest_inflight_bytes",
    "Request bytes held in the in-flight budget (read, being decoded or written), at scrape time.",
)
SOURCE_ROWS = Counter(
    "headwater_source_rows_total",
    "Rows committed by a pull source, by outcome (accepted, rejected, duplicate).",
    ["tenant", "source", "outcome"],
)
SOURCE_BACKOFFS = Counter(
    "headwater_source_backoffs_total",
    "Times a pull source waited, by reason (pushback, quota, error, remote).",
    ["tenant", "source", "reason"],
)

# log
LOG_APPENDS = Counter("headwater_log_appends_total", "Entries appended to the log.")
LOG_APPEND_BYTES = Counter("headwater_log_append_bytes_total", "Bytes appended to the log.")
LOG_FSYNC_SECONDS = Histogram(
    "headwater_log_fsync_seconds",
    "Duration of one group fsync of the log.",
    buckets=LATENCY_BUCKETS,
)
LOG_GROUP_SIZE = Histogram(
    "headwater_log_group_commit_entries",
    "Entries made durable by one group fsync.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LOG_SIZE_BYTES = Gauge("headwater_log_size_bytes", "Bytes held by the log on disk.")
LOG_CONSUMER_LAG_ROWS = Gauge(
    "headwater_log_consumer_lag_rows",
    "Rows a consumer is behind the end of a topic.",
    ["consumer", "topic"],
)
LOG_DISK_FULL = Counter(
    "headwater_log_disk_full_total", "Appends refused because the log's disk was full."
)

# store
STORE_WRITE_ROWS = Counter(
    "headwater_store_write_rows_total", "Rows written to the store.", ["kind"]
)
STORE_ROWS_EXPIRED = Counter(
    "headwater_store_rows_expired_total",
    "Rows deleted from a stream's table (and its quarantine) by the stream's retention.",
    ["tenant", "stream"],
)
STORE_COMMIT_SECONDS = Histogram(
    "headwater_store_commit_seconds", "Duration of one store transaction.", buckets=LATENCY_BUCKETS
)
STORE_QUERY_SECONDS = Histogram(
    "headwater_store_query_seconds",
    "Duration of one read query.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
QUERY_LIMITED = Counter(
    "headwater_query_limited_requests_total",
    "Ad-hoc queries stopped or refused by a query cap, by the answer's code.",
    ["code"],
)

# http
HTTP_REQUESTS = Counter(
    "headwater_http_requests_total",
    "HTTP requests by route and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "headwater_http_request_seconds",
    "HTTP request latency by route.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
HTTP_REJECTED = Counter(
    "headwater_http_pushback_total",
    "Requests answered 429 or 503 (pushback), by reason.",
    ["reason"],
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "headwater_http_connections_refused_total",
    "Connections closed by the edge's limits (header size or count, slow client, caps), by reason.",
    ["reason"],
)

# engine
PIPELINE_ROWS_IN = Counter(
    "headwater_pipeline_rows_in_total", "Rows read by a pipeline.", ["tenant", "pipeline"]
)
PIPELINE_ROWS_OUT = Counter(
    "headwater_pipeline_rows_out_total", "Rows emitted by a pipeline.", ["tenant", "pipeline"]
)
PIPELINE_LATE_ROWS = Counter(
    "headwater_pipeline_late_rows_total", "Rows past allowed lateness.", ["tenant", "pipeline"]
)
PIPELINE_ERROR_ROWS = Counter(
    "headwater_pipeline_error_rows_total", "Rows a pipeline failed on.", ["tenant", "pipeline"]
)
PIPELINE_BATCH_SECONDS = Histogram(
    "headwater_pipeline_batch_seconds",
    "Time to process and commit one micro-batch.",
    ["tenant", "pipeline"],
    buckets=LATENCY_BUCKETS,
)
PIPELINE_EVENT_LAG_SECONDS = Gauge(
    "headwater_pipeline_event_time_lag_seconds",
    "Wall clock minus watermark.",
    ["tenant", "pipeline"],
)
PIPELINE_LOG_LAG_ROWS = Gauge(
    "headwater_pipeline_log_lag_rows",
    "Log end offset minus committed offset.",
    ["tenant", "pipeline"],
)
PIPELINE_STATE_KEYS = Gauge(
    "headwater_pipeline_state_keys", "Open groups held in pipeline state.", ["tenant", "pipeline"]
)
PIPELINE_WORKERS = Gauge(
    "headwater_pipeline_worker_processes",
    "Pipeline worker processes running (setting pipeline_workers).",
)
PIPELINE_WORKER_RESTARTS = Counter(
    "headwater_pipeline_worker_restarts_total",
    "Pipeline worker processes that died and were started again.",
)
SINK_WORKERS = Gauge(
    "headwater_sink_worker_processes",
    "Sink worker processes running (setting sink_workers).",
)
SINK_WORKER_RESTARTS = Counter(
    "headwater_sink_worker_restarts_total",
    "Sink worker processes that died and were started again.",
)
PIPELINE_STATE_BYTES = Gauge(
    "headwater_pipeline_state_bytes", "Bytes held in pipeline state.", ["tenant", "pipeline"]
)
PIPELINE_WATERMARK_SECONDS = Gauge(
    "headwater_pipeline_watermark_timestamp_seconds",
    "Current watermark, Unix time in seconds.",
    ["tenant", "pipeline"],
)

# alerts
ALERT_EVALUATION_SECONDS = Histogram(
    "headwater_alert_evaluation_seconds",
    "Time to evaluate one alert rule over its new rows.",
    buckets=LATENCY_BUCKETS,
)
ALERT_EVALUATION_ERRORS = Counter(
    "headwater_alert_evaluation_errors_total",
    "Evaluations of an alert rule that failed (the rule's table could not be read).",
    ["tenant", "rule"],
)
ALERT_FIRING_KEYS = Gauge(
    "headwater_alert_firing_keys", "Keys of an alert rule firing now.", ["tenant", "rule"]
)
ALERT_DEAD_LETTERS = Counter(
    "headwater_alert_dead_letters_total",
    "Alert notifications written to their rule's dead-letter table (<rule>_dlq).",
    ["tenant", "rule"],
)
ALERT_OUTBOX_ENTRIES = Gauge(
    "headwater_alert_outbox_entries",
    "Alert notifications saved and not yet delivered nor dead-lettered (all rules).",
)
ALERT_NOTIFICATIONS = Counter(
    "headwater_alert_notifications_total",
    "Alert notifications by channel kind and outcome (delivered, failed after retries).",
    ["channel", "outcome"],
)

# Deprecated names, served only with ``metrics_deprecated_names = true``; gone next release.
DEPRECATED = CollectorRegistry(auto_describe=True)
PIPELINE_WATERMARK_MS = Gauge(
    "headwater_pipeline_watermark_ms",
    "Deprecated: use headwater_pipeline_watermark_timestamp_seconds. Current watermark, epoch ms.",
    ["tenant", "pipeline"],
    registry=DEPRECATED,
)

# process (the default collector also exports process_* series)
PROCESS_RSS_BYTES = Gauge(
    "headwater_process_resident_memory_bytes", "Resident memory of the server process."
)

# sinks
SINK_ROWS = Counter(
    "headwater_sink_rows_total",
    "Rows a sink finished, by outcome (delivered, dead_lettered).",
    ["tenant", "sink", "outcome"],
)
SINK_REQUESTS = Counter(
    "headwater_sink_requests_total",
    "HTTP attempts of a sink, by outcome (ok, failed: retried or dead-lettered).",
    ["tenant", "sink", "outcome"],
)
SINK_RATE_LIMITED = Counter(
    "headwater_sink_rate_limited_total",
    "Answers 429 (rate limited) a sink received.",
    ["tenant", "sink"],
)
SINK_PENDING_ROWS = Gauge(
    "headwater_sink_pending_rows",
    "Rows a sink read but has not delivered or dead-lettered yet.",
    ["tenant", "sink"],
)
SINK_LAG_SECONDS = Gauge(
    "headwater_sink_lag_seconds",
    "Age of the oldest pending chunk of rows of a sink.",
    ["tenant", "sink"],
)
SINK_CONCURRENCY = Gauge(
    "headwater_sink_concurrency_requests",
    "Requests a sink may have in flight now (adaptive, AIMD).",
    ["tenant", "sink"],
)
SINK_BREAKER_STATE = Gauge(
    "headwater_sink_breaker_state_info",
    "Circuit breaker of a sink's destination: 1 for its state (closed, half_open, open), 0 for the others.",
    ["tenant", "sink", "state"],
)
SINK_AVG_LATENCY_SECONDS = Gauge(
    "headwater_sink_avg_latency_seconds",
    "Average time of a sink's HTTP attempts since it started.",
    ["tenant", "sink"],
)
