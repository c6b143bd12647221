"""Options of the commands that run on the server's machine: ``serve``, ``demo``, ``keys``.

They default to None, so that a setting left out on the command line comes from the
environment or the config file; the help text says the default the settings give then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from headwater.settings import Settings


def _default(name: str) -> str:
    value = Settings.model_fields[name].default
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return str(value)


def _help(what: str, name: str) -> str:
    # rich reads "[...]" as markup: escape the bracket, or the text disappears
    return f"{what} \\[default: {_default(name)}; env HEADWATER_{name.upper()}]"


HostOpt = Annotated[
    str | None, typer.Option(help=_help("Address to listen on.", "host"), show_default=False)
]
PortOpt = Annotated[
    int | None, typer.Option(help=_help("TCP port to listen on.", "port"), show_default=False)
]
DirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help=_help("Data directory.", "data_dir"), show_default=False),
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML config file \\[default: none; env HEADWATER_CONFIG]",
        show_default=False,
    ),
]  # fmt: skip
