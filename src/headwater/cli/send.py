"""``headwater send STREAM FILE``: push a file of events to a stream in batches.

Each batch goes with an ``Idempotency-Key`` derived from what it holds, is retried on
429/503 (after ``Retry-After``) and on connection errors (with backoff), and its
answer is tallied. Re-running the same command after an interruption stores nothing
twice: batches that made it are answered from the first run.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape

from headwater.cli.batches import Batch, batch_key, batches, format_of, gzip_body, open_input
from headwater.cli.client import (
    DEFAULT_URL,
    ApiError,
    KeyOpt,
    UrlOpt,
    backoff_s,
    call,
    connect,
    err_console,
    error_of,
    fail,
    out_console,
    parse_retry_after,
    unreachable,
)
from headwater.cli.send_report import Tally, print_summary, progress_bar

RETRY_STATUSES = {429, 502, 503, 504}
EXIT_REJECTED = 3  # every batch answered, some rows rejected (and kept in quarantine)
FATAL_STATUSES = {401, 403, 404, 415}


@dataclass(frozen=True)
class SendOptions:
    stream: str
    gzip: bool = False
    prefix: str = "send"
    max_retries: int = 10


@dataclass
class BatchResult:
    """What the server said about one batch (``failure`` is None when it answered 2xx)."""

    batch: Batch
    answer: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False
    attempts: int = 1
    sent_before: bool = False
    failure: ApiError | None = None

    @property
    def fatal(self) -> bool:
        f = self.failure
        return f is not None and (f.status in FATAL_STATUSES or f.code == "unreachable")


def post_batch(
    client: httpx.Client, batch: Batch, opts: SendOptions, stop: threading.Event | None = None
) -> BatchResult:
    """Send one batch, retrying pushback and transport errors up to ``opts.max_retries``."""
    stop = stop or threading.Event()
    body = gzip_body(batch.body) if opts.gzip else batch.body
    headers = {
        "Content-Type": batch.content_type,
        "Idempotency-Key": batch_key(opts.prefix, batch.index, batch.body),
    }
    if opts.gzip:
        headers["Content-Encoding"] = "gzip"
    path = f"/v1/streams/{opts.stream}/events"
    attempt = 0
    while True:
        attempt += 1
        try:
            resp = client.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:
            failure, wait = unreachable(str(client.base_url), exc), backoff_s(attempt - 1)
        else:
            if resp.is_success:
                replayed = resp.headers.get("idempotent-replayed") == "true"
                return BatchResult(batch, resp.json(), replayed, attempt)
            failure = error_of(resp)
            if failure.code == "idempotency_key_reused":
                # The key holds a digest of these very rows: an earlier run stored them,
                # sent with other options (--gzip). Storing them again would double count.
                return BatchResult(batch, replayed=True, attempts=attempt, sent_before=True)
            if not _retryable(resp.status_code, failure.code):
                return BatchResult(batch, attempts=attempt, failure=_explain(failure, batch))
            asked = parse_retry_after(resp.headers.get("retry-after"))
            wait = backoff_s(attempt - 1) if asked is None else asked
        if attempt > opts.max_retries or stop.wait(wait):
            return BatchResult(batch, attempts=attempt, failure=_gave_up(failure, batch, attempt))


def _retryable(status: int, code: str) -> bool:
    # idempotency_retry: an earlier request with this key failed on the server; resend it.
    return status in RETRY_STATUSES or (status == 409 and code == "idempotency_retry")


def _explain(failure: ApiError, batch: Batch) -> ApiError:
    if failure.status == 413:
        failure.message += (
            f" (batch of {batch.rows} rows, {len(batch.body)} bytes; lower --batch-size)"
        )
    return failure


def _gave_up(failure: ApiError, batch: Batch, attempts: int) -> ApiError:
    if failure.status == 429:
        failure.message += (
            f" — still refused after {attempts} attempts; if --batch-size ({batch.rows} rows here) is"
            " above the server's burst (HEADWATER_RATE_LIMIT_BURST_ROWS), lower it"
        )
    else:
        failure.message += (
            f" (gave up after {attempts} attempts; raise --max-retries to wait longer)"
        )
    return failure


def send_all(
    client: httpx.Client,
    items: Iterable[Batch],
    opts: SendOptions,
    tally: Tally,
    concurrency: int,
    on_result: Callable[[BatchResult], None],
) -> None:
    """Send ``items`` (batches) with up to ``concurrency`` in flight; stop early on a fatal answer."""
    stop = threading.Event()
    inflight: deque[Future[BatchResult]] = deque()
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="send")
    try:
        for batch in items:
            inflight.append(pool.submit(post_batch, client, batch, opts, stop))
            if len(inflight) >= concurrency and _settle(inflight.popleft(), tally, on_result):
                stop.set()  # what is in flight gives up instead of retrying
                break
        while inflight:
            if _settle(inflight.popleft(), tally, on_result):
                stop.set()
    finally:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)


def _settle(
    fut: Future[BatchResult], tally: Tally, on_result: Callable[[BatchResult], None]
) -> bool:
    result = fut.result()
    tally.add(result.batch, result.answer, result.replayed, result.failure, result.sent_before)
    on_result(result)
    return result.fatal


def send(
    stream: Annotated[str, typer.Argument(help="Stream to send to (it must exist).")],
    file: Annotated[
        str,
        typer.Argument(
            help="NDJSON, JSON (an object or an array), CSV (header row) or Avro file; - for stdin."
        ),
    ],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="ndjson, json, csv or avro \\[default: by file extension]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per request.")] = 5000,
    max_batch_bytes: Annotated[
        int,
        typer.Option(
            min=1024, help="Bytes per request (text formats): a batch closes at this size."
        ),
    ] = 8 << 20,
    use_gzip: Annotated[
        bool,
        typer.Option(
            "--gzip", help="Compress each request body \\[default: off]", show_default=False
        ),
    ] = False,
    idempotency_prefix: Annotated[
        str,
        typer.Option(
            help="Prefix of the per-batch Idempotency-Key; change it to send the same file again."
        ),
    ] = "send",
    max_retries: Annotated[
        int, typer.Option(min=0, help="Retries per batch on 429/503 and connection errors.")
    ] = 10,
    concurrency: Annotated[
        int, typer.Option(min=1, max=16, help="Requests in flight at once.")
    ] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 60.0,
    show_errors: Annotated[int, typer.Option(min=0, help="Print the first N row errors.")] = 0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the summary as JSON \\[default: off]", show_default=False
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on a terminal).")] = True,
) -> None:
    """Send a file of events to a stream in batches, safely re-runnable.

    Exits 0 when every row was stored (or was a duplicate), 3 when every batch was
    answered but some rows were rejected (they are counted and kept in quarantine), 1 when
    a batch failed or the input could not be read, 130 when interrupted.
    """
    try:
        fmt_name = format_of(file, fmt)
        fh, size = open_input(file, sys.stdin.buffer)
    except (ValueError, OSError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    opts = SendOptions(stream, use_gzip, idempotency_prefix, max_retries)
    show_bar = progress and not as_json and err_console.is_terminal
    with fh, connect(url, key, timeout) as client:
        try:  # a missing stream, a wrong key or no server: say so before reading the file
            call(client, "GET", f"/v1/streams/{stream}")
        except ApiError as exc:
            fail(exc)
        items = batches(fh, fmt_name, batch_size, max_batch_bytes)
        tally, interrupted = run(client, items, opts, concurrency, size, show_bar)
    print_summary(out_console(), err_console, tally, stream, file, show_errors, as_json)
    if interrupted:
        err_console.print(
            "[yellow]interrupted:[/] run the same command again to finish; "
            "batches already stored are not stored twice."
        )
        raise typer.Exit(130)
    if tally.failed or tally.input_error:
        raise typer.Exit(1)
    if tally.rejected:
        raise typer.Exit(EXIT_REJECTED)


def run(
    client: httpx.Client,
    items: Iterable[Batch],
    opts: SendOptions,
    concurrency: int,
    size: int | None,
    show_bar: bool,
) -> tuple[Tally, bool]:
    """Send everything with a progress bar; the tally, and whether Ctrl-C cut it short."""
    tally = Tally(started_s=time.monotonic())
    with progress_bar(err_console, enabled=show_bar) as bar:
        task = bar.add_task(f"{opts.stream} ←", total=size, rows=0, rate="0")

        def on_result(r: BatchResult) -> None:
            rows, rate = f"{tally.rows_sent:,}", f"{tally.rate():,.0f}"
            bar.update(task, advance=r.batch.consumed_bytes, rows=rows, rate=rate)

        try:
            send_all(client, items, opts, tally, concurrency, on_result)
        except KeyboardInterrupt:
            return tally, True
        except Exception as exc:  # a damaged Avro file, an unreadable file: say where
            tally.input_error = (
                f"cannot read the input after {tally.batches} batches ({tally.rows_sent:,} rows): "
                f"{exc}; once it is fixed, a re-run does not store those batches twice"
            )
    return tally, False
