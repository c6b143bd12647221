"""``headwater log verify`` and ``headwater log repair``: the embedded log after damage.

Both run with the server stopped (they take the log directory's lock). ``verify`` lists
every damaged spot and which consumers had read past it; ``repair`` cuts the damage
out, keeps a copy of every file it changes, never lets a topic's next offset fall below
one a consumer committed, and prints exactly what was lost.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from headwater.cli.options import ConfigOpt, DirOpt
from headwater.errors import HeadwaterError
from headwater.settings import Settings, load_settings

if TYPE_CHECKING:  # the log and store code loads when a command runs, not on every CLI call
    from headwater.log.damage import Loss, TopicReport

app = typer.Typer(no_args_is_help=True, help="Check and repair the embedded log (server stopped).")
out = Console(highlight=False, soft_wrap=True)


@app.command()
def verify(data_dir: DirOpt = None, config: ConfigOpt = None) -> None:
    """List every damaged spot of the log; exit 1 if there is one."""
    settings = load_settings(config, data_dir=data_dir)
    with _held(settings) as reports:
        for report in reports:
            _print_report(report)
        damaged = [r for r in reports if not r.sound]
    if damaged:
        out.print(
            f"{len(damaged)} damaged topic(s). Restore from a backup, or run "
            f"`headwater log repair --data-dir {settings.data_dir}` to cut the damage out."
        )
        raise typer.Exit(1)
    out.print(f"the log in {settings.log_dir} is sound ({len(reports)} topics)")


@app.command()
def repair(data_dir: DirOpt = None, config: ConfigOpt = None) -> None:
    """Cut every damaged spot out of the log and print what was lost."""
    settings = load_settings(config, data_dir=data_dir)
    from headwater.log.damage import repair_topic

    backup = settings.data_dir / f"log-repair-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    with _held(settings) as reports:
        lost = [loss for r in reports for loss in repair_topic(r, backup, settings.fsync)]
        repaired = [r for r in reports if not r.sound]
    if not repaired:
        out.print(f"the log in {settings.log_dir} is sound: nothing to repair")
        return
    for loss in lost:
        out.print(_describe(loss))
    for report in repaired:
        nxt = max(report.end, *report.committed.values(), 0)
        out.print(f"{report.topic}: the next event gets offset {nxt}")
    out.print(f"copies of the changed files: {backup}")


@contextmanager
def _held(settings: Settings) -> Iterator[list[TopicReport]]:
    """The log's reports, with the directory locked against a running server."""
    from headwater.log.damage import inspect_log
    from headwater.log.disk import lock_directory

    try:
        if not settings.log_dir.is_dir():
            raise HeadwaterError(f"{settings.log_dir} is not a log directory: check --data-dir")
        fd = lock_directory(settings.log_dir)
        try:
            yield inspect_log(settings.log_dir, _committed(settings))
        finally:
            os.close(fd)
    except HeadwaterError as exc:
        Console(stderr=True).print(f"[red]error:[/] {escape(exc.message)}")
        raise typer.Exit(2) from None


def _committed(settings: Settings) -> dict[str, dict[str, int]]:
    from headwater.datadir import committed_offsets, open_part, open_sqlite_part
    from headwater.ingest.answers import AnswerFile
    from headwater.store.duckdb import DuckDBStore

    store = open_part(
        "store",
        settings.store_dir,
        lambda: DuckDBStore(settings.store_dir, memory_limit="256MB", threads=1),
    )
    answers = open_sqlite_part(
        "answers", settings.answers_path, lambda: AnswerFile(settings.answers_path)
    )
    try:
        return committed_offsets(store, answers)
    finally:
        store.close()
        answers.close()


def _print_report(report: TopicReport) -> None:
    if report.sound:
        out.print(f"{report.topic}: sound, offsets up to {report.end}")
        return
    out.print(f"{report.topic}: DAMAGED")
    for spot in report.spots:
        until = (
            f"intact entries resume at offset {spot.resumes}"
            if spot.resumes
            else "nothing intact follows"
        )
        kind = " (a torn tail: an unacknowledged write cut by a crash)" if spot.torn else ""
        out.print(
            f"  {escape(str(spot.path))} byte {spot.position}, offset {spot.offset}: "
            f"{spot.reason}{kind}; {until}"
        )
    for consumer, offset in sorted(report.committed.items()):
        out.print(f"  consumer {consumer} committed offset {offset}")
    for consumer, offset in sorted(report.behind().items()):
        out.print(f"  the log ends at {report.end}, below {consumer}'s committed offset {offset}")


def _describe(loss: Loss) -> str:
    span = (
        f"offsets {loss.start}..{loss.stop - 1}" if loss.stop else f"offsets from {loss.start} on"
    )
    text = f"{loss.topic}: LOST {span} ({loss.reason})"
    if loss.read_by:
        text += f"; already read by {', '.join(loss.read_by)} (their results keep them)"
    if loss.unread_by:
        text += f"; never seen by {', '.join(loss.unread_by)}"
    return text
