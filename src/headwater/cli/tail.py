"""``headwater tail NAME``: print rows of a stream or table as they arrive.

A table (pipeline output) is followed through its server-sent-events feed
(``GET /v1/tables/{name}/subscribe``). A stream is polled in arrival order: rows
whose log ``_offset`` is past the last one shown, so a row that arrives late in event
time is shown too, when it arrives.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.markup import escape

from headwater.cli.client import (
    DEFAULT_URL,
    ApiError,
    KeyOpt,
    UrlOpt,
    call,
    connect,
    err_console,
    error_of,
    fail,
    out_console,
    request,
    unreachable,
)
from headwater.cli.tail_print import RowPrinter

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PAGE_ROWS = 1000


@dataclass
class Stop:
    """When to stop: after ``max_rows`` new rows or at ``deadline`` (monotonic seconds)."""

    max_rows: int | None = None
    deadline: float | None = None
    shown: int = 0

    def remaining_s(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def done(self) -> bool:
        r = self.remaining_s()
        return (self.max_rows is not None and self.shown >= self.max_rows) or (
            r is not None and r <= 0
        )

    def take(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows still to show, counting them."""
        if self.max_rows is not None:
            rows = rows[: max(0, self.max_rows - self.shown)]
        self.shown += len(rows)
        return rows


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The ``data`` of each server-sent event (comments and other fields skipped).

    >>> list(sse_data([": hi", "", "data: {\\"a\\": 1}", "", "data: x", "data: y", ""]))
    ['{"a": 1}', 'x\\ny']
    """
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if data:
        yield "\n".join(data)


def rows_query(name: str, after: int, limit: int) -> str:
    return f'SELECT * FROM "{name}" WHERE _offset >= {after} ORDER BY _offset LIMIT {limit}'


def last_rows_query(name: str, before: int, n: int) -> str:
    return (f'SELECT * FROM (SELECT * FROM "{name}" WHERE _offset < {before} ORDER BY _offset DESC '
            f"LIMIT {n}) ORDER BY _offset")  # fmt: skip


def query_rows(client: httpx.Client, sql_text: str) -> list[dict[str, Any]]:
    answer = call(client, "POST", "/v1/query", json={"sql": sql_text})
    cols = answer["columns"]
    return [dict(zip(cols, r, strict=False)) for r in answer["rows"]]


def follow_stream(
    client: httpx.Client,
    name: str,
    initial: int,
    interval_s: float,
    stop: Stop,
    printer: RowPrinter,
) -> None:
    """Poll the stream's stored rows in log order, from its end when tail started."""
    position = int(call(client, "GET", f"/v1/streams/{name}")["log_end_offset"])
    if initial:
        printer.show(query_rows(client, last_rows_query(name, position, initial)))
    err_console.print(
        f"[dim]following stream {escape(name)} (polling every {interval_s:g} s; Ctrl-C to stop)[/]"
    )
    while not stop.done():
        rows = query_rows(client, rows_query(name, position, PAGE_ROWS))
        if rows:
            position = int(rows[-1]["_offset"]) + 1
            printer.show(stop.take(rows))
            if len(rows) == PAGE_ROWS:
                continue
        remaining = stop.remaining_s()
        time.sleep(interval_s if remaining is None else max(0.0, min(interval_s, remaining)))


def follow_table(
    client: httpx.Client, name: str, initial: int, stop: Stop, printer: RowPrinter
) -> None:
    """Subscribe to the table's change feed; show its latest rows first."""
    events: queue.Queue[str | BaseException] = queue.Queue()
    timeout = httpx.Timeout(10.0, read=None)
    with client.stream("GET", f"/v1/tables/{name}/subscribe", timeout=timeout) as resp:
        if not resp.is_success:
            resp.read()
            if resp.status_code == 404 and error_of(resp).code == "not_found":  # no such route
                if name not in call(client, "GET", "/v1/tables").get("tables", []):
                    raise ApiError(
                        f"there is no stream or table named {name!r}", code="unknown_table"
                    )
                raise ApiError(
                    f"{name!r} is not a stream, and this server cannot push table changes "
                    f"(no /v1/tables/{name}/subscribe); query it with `headwater sql` instead",
                    status=404, code="no_subscriptions",
                )  # fmt: skip
            raise error_of(resp)
        threading.Thread(target=_pump, args=(resp, events), daemon=True).start()
        if initial:
            printer.show(_latest_table_rows(client, name, initial))
        err_console.print(f"[dim]following table {escape(name)} (live; Ctrl-C to stop)[/]")
        while not stop.done():
            remaining = stop.remaining_s()
            try:
                item = events.get(timeout=None if remaining is None else max(0.01, remaining))
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise ApiError(f"the live feed of {name!r} ended: {item}", code="feed_closed")
            change = orjson.loads(item)
            if change.get("kind") == "resync":
                err_console.print(
                    "[yellow]warning:[/] this terminal fell behind; some changes were skipped"
                )
            printer.show(stop.take(list(change.get("rows", []))))


def _pump(resp: httpx.Response, events: queue.Queue[str | BaseException]) -> None:
    try:
        for data in sse_data(resp.iter_lines()):
            events.put(data)
        events.put(EOFError("the server closed the connection"))
    except Exception as exc:  # the connection broke: the main thread reports it
        events.put(exc)


def _latest_table_rows(client: httpx.Client, name: str, n: int) -> list[dict[str, Any]]:
    resp = request(client, "GET", f"/v1/tables/{name}/rows", params={"order": "desc", "limit": n})
    if resp.status_code == 404:  # a table with no rows yet
        return []
    if not resp.is_success:
        raise error_of(resp)
    rows: list[dict[str, Any]] = resp.json().get("rows", [])
    return rows[::-1]


def tail(
    name: Annotated[str, typer.Argument(help="A stream or a table (pipeline output).")],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    lines: Annotated[
        int, typer.Option("-n", "--lines", min=0, help="Latest rows to show first.")
    ] = 10,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table or json (one object a line).")
    ] = "table",
    interval: Annotated[
        float, typer.Option(min=0.05, help="Seconds between polls of a stream.")
    ] = 1.0,
    max_rows: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many new rows (default: no limit).")
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds (default: no limit).")
    ] = None,
) -> None:
    """Print new rows of a stream or table as they arrive (Ctrl-C to stop)."""
    if fmt not in ("table", "json"):
        err_console.print(
            f"[bold red]error:[/] unknown --format {escape(fmt)!r}; use table or json"
        )
        raise typer.Exit(2)
    if not NAME_RE.match(name):
        err_console.print(f"[bold red]error:[/] {escape(name)!r} is not a stream or table name")
        raise typer.Exit(2)
    stop = Stop(max_rows, None if timeout is None else time.monotonic() + timeout)
    out: Console = out_console()
    printer = RowPrinter(fmt, out)
    try:
        with connect(url, key) as client:
            is_stream = request(client, "GET", f"/v1/streams/{name}")
            if is_stream.status_code == 200:
                follow_stream(client, name, lines, interval, stop, printer)
            elif is_stream.status_code == 404:
                follow_table(client, name, lines, stop, printer)
            else:
                raise error_of(is_stream)
    except httpx.TransportError as exc:
        fail(unreachable(url, exc))
    except ApiError as exc:
        fail(exc)
    except KeyboardInterrupt:
        pass
