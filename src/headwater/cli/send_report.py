"""What ``headwater send`` shows: the progress bar, the running tally and the summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from headwater.cli.batches import Batch
from headwater.cli.client import ApiError

KEPT_ERRORS = 1000


@dataclass
class Tally:
    """Running totals over the answers, in batch order."""

    started_s: float
    rows_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    batches: int = 0
    replayed: int = 0
    sent_before: int = 0
    errors_truncated: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    input_error: str | None = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s

    def rate(self) -> float:
        return self.rows_sent / max(self.elapsed_s(), 1e-6)

    def add(
        self,
        batch: Batch,
        answer: dict[str, Any],
        replayed: bool,
        failure: ApiError | None,
        sent_before: bool = False,
    ) -> None:
        first_record = self.rows_sent
        self.rows_sent += batch.rows
        self.batches += 1
        if failure is not None:
            self.failures.append({
                "batch": batch.index, "records": [first_record + 1, first_record + batch.rows],
                "status": failure.status, "code": failure.code, "message": failure.message,
            })  # fmt: skip
            return
        self.replayed += replayed
        self.sent_before += sent_before
        self.accepted += int(answer.get("accepted", 0))
        self.rejected += int(answer.get("rejected", 0))
        self.duplicates += int(answer.get("duplicates", 0))
        self.errors_truncated |= bool(answer.get("errors_truncated"))
        for e in answer.get("errors", []):
            if len(self.errors) >= KEPT_ERRORS:
                self.errors_truncated = True
                break
            row = int(e.get("row", -1))
            self.errors.append({
                "batch": batch.index, "row": row, "record": first_record + row + 1,
                "line": batch.line_of(row), "field": e.get("field"), "code": e.get("code"),
                "message": e.get("message"),
            })  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        elapsed = self.elapsed_s()
        return {
            "accepted": self.accepted, "rejected": self.rejected, "duplicates": self.duplicates,
            "rows_sent": self.rows_sent, "batches": self.batches, "failed_batches": self.failed,
            "replayed_batches": self.replayed, "sent_before_batches": self.sent_before, "elapsed_s": round(elapsed, 3),
            "rows_per_s": round(self.rows_sent / max(elapsed, 1e-6), 1),
            "errors": self.errors, "errors_truncated": self.errors_truncated,
            "failures": self.failures, "input_error": self.input_error,
        }  # fmt: skip


def progress_bar(console: Console, enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[rows]} rows ({task.fields[rate]} rows/s)"),
        TimeElapsedColumn(),
        console=console,
        disable=not enabled,
        transient=False,
    )


def print_summary(
    out: Console, err: Console, t: Tally, stream: str, file: str, show_errors: int, as_json: bool
) -> None:
    if as_json:
        d = t.as_dict()
        d["errors"] = d["errors"][:show_errors] if show_errors else d["errors"][:100]
        out.print_json(orjson.dumps({"stream": stream, "file": file, **d}).decode())
        return
    d = t.as_dict()
    grid = Table.grid(padding=(0, 2))
    grid.add_row("accepted", f"{t.accepted:,}")
    grid.add_row("rejected", f"{t.rejected:,}")
    grid.add_row("duplicates", f"{t.duplicates:,}")
    again = f", {t.replayed} answered from an earlier request" if t.replayed else ""
    grid.add_row("batches", f"{t.batches - t.failed} ok, {t.failed} failed{again}")
    grid.add_row("elapsed", f"{d['elapsed_s']:.2f} s ({d['rows_per_s']:,.0f} rows/s)")
    out.print(f"[bold]{escape(file)}[/] → stream [bold]{escape(stream)}[/]")
    out.print(grid)
    if show_errors and t.errors:
        out.print(errors_table(t.errors[:show_errors]))
    for f in t.failures:
        lo, hi = f["records"]
        code = escape(f"[{f['code']}]")
        err.print(
            f"[bold red]batch {f['batch']} failed[/] (records {lo:,}–{hi:,}) "
            f"{code}: {escape(str(f['message']))}"
        )
    if t.sent_before:
        err.print(
            f"[yellow]note:[/] {t.sent_before} batches were stored by an earlier run sent with other "
            "options (--gzip); they were not stored again, and their row counts are not in the totals"
        )
    if t.input_error:
        err.print(f"[bold red]error:[/] {escape(t.input_error)}")
    if t.rejected:
        hint = "" if show_errors else " (--show-errors N lists them)"
        err.print(
            f"[yellow]warning:[/] {t.rejected:,} rows were rejected{hint}; they are kept in "
            f"quarantine: GET /v1/streams/{escape(stream)}/quarantine"
        )


def errors_table(errors: list[dict[str, Any]]) -> Table:
    table = Table(
        "batch", "row", "line", "field", "code", "message", title="row errors", title_justify="left"
    )
    for e in errors:
        line = "" if e["line"] is None else str(e["line"])
        table.add_row(
            str(e["batch"]),
            str(e["row"]),
            line,
            str(e["field"] or ""),
            str(e["code"]),
            str(e["message"]),
        )
    return table
