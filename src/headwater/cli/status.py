"""``headwater status``: is the server up and ready, what streams, pipelines, sources and
sinks it runs."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

from headwater.cli.client import (
    DEFAULT_URL,
    ApiError,
    KeyOpt,
    UrlOpt,
    call,
    connect,
    error_of,
    fail,
    out_console,
    request,
)


def gather(client: httpx.Client) -> dict[str, Any]:
    """Health, readiness, streams and (when the server has them) pipelines."""
    health = call(client, "GET", "/health")
    ready_resp = request(client, "GET", "/ready")
    if ready_resp.status_code not in (200, 503):
        raise error_of(ready_resp)
    streams = call(client, "GET", "/v1/streams").get("streams", [])
    pipelines_resp = request(client, "GET", "/v1/pipelines")
    pipelines: list[dict[str, Any]] | None = None
    if pipelines_resp.status_code == 200:
        body = pipelines_resp.json()
        pipelines = body.get("pipelines", []) if isinstance(body, dict) else body
    elif pipelines_resp.status_code != 404:  # 404: this server runs no pipeline engine
        raise error_of(pipelines_resp)
    sources_resp = request(client, "GET", "/v1/sources")
    sources = sources_resp.json().get("sources", []) if sources_resp.status_code == 200 else []
    return {
        "url": str(client.base_url),
        "health": health,
        "ready": ready_resp.json(),
        "streams": streams,
        "pipelines": pipelines,
        "sinks": _listed(client, "/v1/sinks", "sinks"),
        "sources": sources,
    }


def _listed(client: httpx.Client, path: str, field: str) -> list[dict[str, Any]] | None:
    """The list a route answers, or None when this server has no such route (404)."""
    resp = request(client, "GET", path)
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise error_of(resp)
    items: list[dict[str, Any]] = resp.json().get(field, [])
    return items


def metric(p: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` found in the pipeline's ``metrics`` or at its top level."""
    raw = p.get("metrics")
    m: dict[str, Any] = raw if isinstance(raw, dict) else {}
    for n in names:
        for where in (m, p):
            if where.get(n) is not None:
                return where[n]
    return None


def num(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def streams_table(streams: list[dict[str, Any]]) -> Table:
    t = Table("name", "version", "fields", "log end offset", "stored offset", "behind",
              title=f"Streams ({len(streams)})", title_justify="left", header_style="bold")  # fmt: skip
    for s in streams:
        end, stored = s.get("log_end_offset"), s.get("stored_offset")
        behind = end - stored if isinstance(end, int) and isinstance(stored, int) else None
        t.add_row(escape(str(s.get("name"))), num(s.get("version")), num(len(s.get("fields", []))),
                  num(end), num(stored), num(behind))  # fmt: skip
    return t


STATUS_STYLE = {"running": "green", "paused": "yellow", "failed": "bold red",
                "backing_off": "yellow"}  # fmt: skip


def sources_table(sources: list[dict[str, Any]]) -> Table:
    """Each source's state (and why), where it stands, its counters and its last error."""
    t = Table("name", "kind", "stream", "status", "position", "rows in", "rejected", "lag",
              "last error", title=f"Sources ({len(sources)})", title_justify="left",
              header_style="bold")  # fmt: skip
    for s in sources:
        status = str(s.get("status", "?"))
        shown = f"[{STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"
        if s.get("reason"):
            shown += f"\n[dim]{escape(str(s['reason']))}[/]"
        error = s.get("last_error")
        t.add_row(escape(str(s.get("name"))), escape(str(s.get("kind"))),
                  escape(str(s.get("stream"))), shown, escape(str(s.get("position") or "-")),
                  num(s.get("rows_in")), num(s.get("rows_rejected")), num(s.get("lag")),
                  f"[red]{escape(str(error))}[/]" if error else "-")  # fmt: skip
    return t


def pipelines_table(pipelines: list[dict[str, Any]]) -> Table:
    t = Table("name", "status", "watermark", "lag", "rows in", "rows out", "late", "errors",
              title=f"Pipelines ({len(pipelines)})", title_justify="left", header_style="bold")  # fmt: skip
    for p in pipelines:
        status = str(p.get("status", "?"))
        shown = f"[{STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"
        if p.get("reason"):
            shown += f"\n[dim]{escape(str(p['reason']))}[/]"
        lag_rows, lag_s = (
            metric(p, "log_lag_rows", "lag_rows", "lag"),
            metric(p, "event_time_lag_s", "lag_s"),
        )
        lag = " / ".join(x for x in (f"{num(lag_rows)} rows" if lag_rows is not None else "",
                                     f"{lag_s:,.1f} s" if isinstance(lag_s, int | float) else "") if x)  # fmt: skip
        t.add_row(
            escape(str(p.get("name"))), shown, escape(str(p.get("watermark") or "-")), lag or "-",
            num(metric(p, "rows_in")), num(metric(p, "rows_out")),
            num(metric(p, "late_rows", "late")), num(metric(p, "error_rows", "errors")),
        )  # fmt: skip
    return t


def sinks_table(sinks: list[dict[str, Any]]) -> Table:
    """Each sink's counters (produced = delivered + dead-lettered + pending) and health."""
    t = Table("name", "status", "from", "produced", "delivered", "dead-lettered", "pending",
              "lag", "breaker", "error rate", "rate limited", "avg request",
              title=f"Sinks ({len(sinks)})", title_justify="left", header_style="bold")  # fmt: skip
    for s in sinks:
        status = str(s.get("status", "?"))
        shown = f"[{STATUS_STYLE.get(status, 'yellow')}]{escape(status)}[/]"
        if s.get("reason"):
            shown += f"\n[dim]{escape(str(s['reason']))}[/]"
        rate = s.get("error_rate")
        avg = s.get("avg_latency_ms")
        lag = s.get("lag_seconds")
        t.add_row(
            escape(str(s.get("name"))), shown, escape(str(s.get("from"))),
            num(s.get("produced")), num(s.get("delivered")), num(s.get("dead_lettered")),
            num(s.get("pending")), f"{lag:,.1f} s" if isinstance(lag, int | float) else "-",
            escape(str(s.get("breaker", "-"))),
            f"{rate:.1%}" if isinstance(rate, int | float) else "-",
            num(s.get("rate_limit_hits")), f"{avg:,.0f} ms" if isinstance(avg, int | float) else "-",
        )  # fmt: skip
    return t


def render(info: dict[str, Any]) -> Group:
    ready = info["ready"]
    ok = ready.get("status") == "ready"
    head = (f"Headwater at [bold]{escape(info['url'])}[/]  [green]● live[/]  "
            + ("[green]● ready[/]" if ok else "[bold red]● not ready[/]"))  # fmt: skip
    parts: list[Any] = [head]
    for name, check in (ready.get("checks") or {}).items():
        if isinstance(check, dict) and not check.get("ok", True):
            parts.append(
                f"  [red]✗ {escape(name)}[/]: {escape(str(check.get('error') or 'failing'))}"
            )
    parts.append("")
    parts.append(
        streams_table(info["streams"])
        if info["streams"]
        else "[dim]No streams yet: create one with POST /v1/streams.[/]"
    )
    if info["pipelines"] is None:
        parts.append("[dim]Pipelines: this server has no pipeline API.[/]")
    elif info["pipelines"]:
        parts.append(pipelines_table(info["pipelines"]))
    else:
        parts.append("[dim]No pipelines yet: create one with POST /v1/pipelines.[/]")
    if info.get("sinks"):
        parts.append(sinks_table(info["sinks"]))
    if info.get("sources"):
        parts.append(sources_table(info["sources"]))
    return Group(*parts)


def status(
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print machine-readable JSON \\[default: off]", show_default=False
        ),
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 10.0,
) -> None:
    """Show the server's health and readiness, its streams, pipelines and sources.

    Exits 0 when the server is ready, 1 when it is not or cannot be reached.
    """
    try:
        with connect(url, key, timeout) as client:
            info = gather(client)
    except ApiError as exc:
        fail(exc)
    if as_json:
        print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    else:
        console: Console = out_console()
        console.print(render(info))
    if info["ready"].get("status") != "ready":
        raise typer.Exit(1)
