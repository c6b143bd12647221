"""The ``headwater`` command."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Annotated, Any

import typer

from headwater.settings import Settings, load_settings

app = typer.Typer(no_args_is_help=True, help="Headwater: real-time data processing in one process.")

HostOpt = Annotated[str | None, typer.Option(help="Address to listen on [env HEADWATER_HOST].")]
PortOpt = Annotated[int | None, typer.Option(help="Port [env HEADWATER_PORT].")]
DirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory [env HEADWATER_DATA_DIR].")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML config file [env HEADWATER_CONFIG].")
]


def _settings(
    host: str | None, port: int | None, data_dir: Path | None, config: Path | None, **kw: Any
) -> Settings:
    return load_settings(config, host=host, port=port, data_dir=data_dir, **kw)


def run_server(settings: Settings, extensions_for: str = "serve") -> None:
    import uvicorn
    from rich.console import Console

    from headwater.api.app import create_app, front_door
    from headwater.errors import HeadwaterError
    from headwater.observability.logging import configure
    from headwater.services import build_platform

    configure(settings.log_level, settings.log_format)
    console = Console(stderr=True)
    try:
        platform = build_platform(settings)
    except HeadwaterError as exc:  # damaged or locked data: say what and why, no traceback
        console.print(
            f"headwater: cannot start: {exc.message}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(2) from None
    if platform.bootstrap_secret and not settings.bootstrap_key:
        console.print(
            f"[bold green]Admin API key (shown once, store it now):[/] {platform.bootstrap_secret}"
        )
    from headwater.extensions import extensions

    fastapi_app = create_app(platform, extensions(extensions_for))
    # Everything built so far lives as long as the server: keep it out of the collector's
    # full passes, which otherwise pause the event loop for tens of milliseconds.
    gc.freeze()
    console.print(
        f"Headwater listening on http://{settings.host}:{settings.port}  (API docs at /docs)"
    )
    uvicorn.run(
        front_door(fastapi_app), host=settings.host, port=settings.port, log_level="warning",
        loop="uvloop", http="httptools", access_log=False, timeout_graceful_shutdown=5,
    )  # fmt: skip


@app.callback()
def _root() -> None:
    """Headwater: real-time data processing in one process."""


@app.command()
def serve(
    host: HostOpt = None, port: PortOpt = None, data_dir: DirOpt = None, config: ConfigOpt = None
) -> None:
    """Run the server: ingest, pipelines, store and API in one process."""
    run_server(_settings(host, port, data_dir, config))


@app.command()
def demo(
    host: HostOpt = None, port: PortOpt = None, data_dir: DirOpt = None, config: ConfigOpt = None
) -> None:
    """Run the server with a simulated IoT fleet, a `readings` stream and sample pipelines."""
    from rich.console import Console

    settings = _settings(host, port, data_dir, config)
    base = f"http://{settings.host}:{settings.port}"
    Console(stderr=True).print(
        "[bold]Headwater demo[/]: simulated devices stream into [cyan]readings[/]; pipelines "
        "[cyan]device_minute[/], [cyan]category_stats[/], [cyan]anomalies[/] run on it.\n"
        f"  dashboard   {base}/\n  API docs    {base}/docs\n"
        f"  demo API    {base}/api/v1/processed-data  {base}/api/v1/raw-data\n"
        f"  start/stop  POST {base}/api/v1/start-ingestion  /api/v1/stop-ingestion"
    )
    run_server(settings, "demo")


def _client_commands() -> None:
    """Commands that talk to a running server over its HTTP API."""
    from headwater.cli import logcmd, send, sql, status, tail

    app.command("status")(status.status)
    app.command("send")(send.send)
    app.command("sql")(sql.sql)
    app.command("tail")(tail.tail)
    app.add_typer(logcmd.app, name="log")


_client_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
