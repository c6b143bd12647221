"""Options of the commands that run on the server's machine: ``serve``, ``demo``, ``keys``.

They default to None, so that a setting left out on the command line comes from the
environment or the config file; the help text says the default the settings give then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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


CertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert", help="PEM certificate: serve HTTPS \\[default: none; env HEADWATER_TLS_CERT]",
        show_default=False,
    ),
]  # fmt: skip
KeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-key", help="PEM key of --tls-cert \\[default: none; env HEADWATER_TLS_KEY]",
        show_default=False,
    ),
]  # fmt: skip
MqttUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--mqtt-url",
        help="MQTT broker the demo publishes a device fleet to and reads back, mqtt://host:1883 "
        "\\[default: none; env HEADWATER_DEMO_MQTT_URL]",
        show_default=False,
    ),
]


def load_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """The settings, or one line per problem (bad value, unknown name, unreadable file), exit 2."""
    import tomllib

    from pydantic import ValidationError

    from headwater.settings import load_settings

    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors()]
    except tomllib.TOMLDecodeError as exc:
        problems = [f"the config file is not valid TOML: {exc}"]
    except OSError as exc:
        problems = [f"cannot read the config file {exc.filename}: {exc.strerror}"]
    for problem in problems:
        typer.echo(f"headwater: {problem}", err=True)
    raise typer.Exit(2)


def _problem(error: Any) -> str:
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r}; docs/configuration.md lists them all"
    return (
        f"setting {name}: {error['msg']} (got {error['input']!r}); "
        f"set it in HEADWATER_{name.upper()} or the config file"
    )
