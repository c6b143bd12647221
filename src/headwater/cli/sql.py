"""``headwater sql "SELECT ..."``: read-only SQL over a tenant's streams and tables."""

from __future__ import annotations

import csv
import sys
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.cli.client import (
    DEFAULT_URL,
    ApiError,
    KeyOpt,
    UrlOpt,
    call,
    connect,
    err_console,
    fail,
    out_console,
)

FORMATS = ("table", "json", "ndjson", "csv")
DEFAULT_LIMIT = 100  # rows printed unless --limit says otherwise
COUNT_ROWS = 1000  # rows asked for at least, to say how many the page leaves out


def cell(value: Any) -> str:
    """A value as table text: NULL for None, JSON for nested values."""
    if value is None:
        return "NULL"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def render_table(columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(*[escape(c) for c in columns], header_style="bold")
    for r in rows:
        table.add_row(*[escape(cell(v)) for v in r])
    return table


def write_rows(fmt: str, columns: list[str], rows: list[list[Any]], out: Console) -> None:
    if fmt == "table":
        out.print(render_table(columns, rows))
    elif fmt == "json":
        sys.stdout.write(
            orjson.dumps([dict(zip(columns, r, strict=False)) for r in rows]).decode() + "\n"
        )
    elif fmt == "ndjson":
        for r in rows:
            sys.stdout.write(orjson.dumps(dict(zip(columns, r, strict=False))).decode() + "\n")
    else:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(columns)
        w.writerows([["" if v is None else cell(v) for v in r] for r in rows])


def sql(
    query: Annotated[str, typer.Argument(help='A SELECT, e.g. "SELECT count(*) FROM readings".')],
    url: UrlOpt = DEFAULT_URL,
    key: KeyOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, json, ndjson or csv.")
    ] = "table",
    max_rows: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Most rows the server returns \\[default: 10x --limit, at least 1000; the "
            "server's query_max_rows caps it]",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 60.0,
    limit: Annotated[
        int, typer.Option(min=0, help="Most rows to print; 0 prints every row returned.")
    ] = DEFAULT_LIMIT,
) -> None:
    """Run a read-only SQL query on the server and print a page of its rows.

    Internal columns (``_offset``, ``_received_ms``, …) show only when the query names them.
    """
    if fmt not in FORMATS:
        err_console.print(
            f"[bold red]error:[/] unknown --format {escape(fmt)!r}; use {', '.join(FORMATS)}"
        )
        raise typer.Exit(2)
    body: dict[str, Any] = {"sql": query}
    if max_rows is not None:
        body["max_rows"] = max_rows
    elif limit:  # enough to say how many rows the page leaves out, within reason
        body["max_rows"] = max(limit * 10, COUNT_ROWS)
    try:
        with connect(url, key, timeout) as client:
            answer = call(client, "POST", "/v1/query", json=body)
    except ApiError as exc:
        fail(exc)
    columns, rows = list(answer.get("columns", [])), list(answer.get("rows", []))
    shown = rows[:limit] if limit else rows
    write_rows(fmt, columns, shown, out_console())
    if fmt == "table":
        err_console.print(f"[dim]{len(shown):,} row{'s' if len(shown) != 1 else ''}[/]")
        if answer.get("hidden_columns"):
            names = ", ".join(answer["hidden_columns"])
            err_console.print(
                f"[dim]internal columns not shown: {escape(names)} (name them to see them)[/]"
            )
    capped = max_rows is not None or not limit  # the server's cap, not the page, cut it
    note = cut_note(len(shown), len(rows), bool(answer.get("truncated")), capped)
    if note:
        err_console.print(note)


def cut_note(shown: int, returned: int, truncated: bool, capped: bool) -> str | None:
    """What the printed page leaves out, and how to see it.

    >>> cut_note(100, 250, False, False)
    '[yellow]note:[/] 150 more rows not shown (250 in all); use --limit 0 to print them all, or --limit N'
    >>> cut_note(100, 1000, True, False)
    '[yellow]note:[/] more than 900 more rows not shown; add a LIMIT to the query, or use --limit 0 --max-rows N'
    """
    more = returned - shown
    if truncated and not capped:
        return (
            f"[yellow]note:[/] more than {more:,} more rows not shown; "
            "add a LIMIT to the query, or use --limit 0 --max-rows N"
        )
    if truncated:
        return (
            f"[yellow]warning:[/] the answer was cut at {returned:,} rows; "
            "add a LIMIT or use --max-rows"
        )
    if more > 0:
        return (
            f"[yellow]note:[/] {more:,} more rows not shown ({returned:,} in all); "
            "use --limit 0 to print them all, or --limit N"
        )
    return None
