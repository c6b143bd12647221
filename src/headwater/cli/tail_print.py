"""Printing rows as they come: aligned columns that stay put, or one JSON object a line."""

from __future__ import annotations

import sys
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from headwater.cli.sql import cell

HIDDEN_JSON = {"_id_hash"}


class RowPrinter:
    """Prints batches of rows; in ``table`` form the header comes once and widths only grow.

    System columns (``_offset``, ``_received_ms``...) are left out of the table form.
    """

    def __init__(self, fmt: str, console: Console) -> None:
        self.fmt = fmt
        self.console = console
        self.columns: list[str] | None = None
        self.widths: dict[str, int] = {}

    def show(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.fmt == "json":
            out = b"".join(
                orjson.dumps({k: v for k, v in r.items() if k not in HIDDEN_JSON}) + b"\n"
                for r in rows
            )
            sys.stdout.write(out.decode())
            sys.stdout.flush()
            return
        first = self.columns is None
        if self.columns is None:
            self.columns = [c for c in rows[0] if not c.startswith("_")] or list(rows[0])
        texts = [[cell(r.get(c)) for c in self.columns] for r in rows]
        for i, c in enumerate(self.columns):
            self.widths[c] = max(self.widths.get(c, len(c)), *(len(t[i]) for t in texts))
        table = Table(box=None, show_header=first, header_style="bold", pad_edge=False)
        for c in self.columns:
            table.add_column(escape(c), min_width=self.widths[c], no_wrap=True)
        for t in texts:
            table.add_row(*[escape(x) for x in t])
        self.console.print(table)
