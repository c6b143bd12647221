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
    max_rows: Annotated[int | None, typer.Option(min=1, help="Most rows to return.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 60.0,
) -> None:
    """Run a read-only SQL query on the server and print the rows."""
    if fmt not in FORMATS:
        err_console.print(
            f"[bold red]error:[/] unknown --format {escape(fmt)!r}; use {', '.join(FORMATS)}"
        )
        raise typer.Exit(2)
    body: dict[str, Any] = {"sql": query}
    if max_rows is not None:
        body["max_rows"] = max_rows
    try:
        with connect(url, key, timeout) as client:
            answer = call(client, "POST", "/v1/query", json=body)
    except ApiError as exc:
        fail(exc)
    columns, rows = list(answer.get("columns", [])), list(answer.get("rows", []))
    write_rows(fmt, columns, rows, out_console())
    if fmt == "table":
        err_console.print(f"[dim]{len(rows):,} row{'s' if len(rows) != 1 else ''}[/]")
    if answer.get("truncated"):
        err_console.print(
            f"[yellow]warning:[/] the answer was cut at {len(rows):,} rows; add a LIMIT or use --max-rows"
        )
