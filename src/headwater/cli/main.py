"""The ``headwater`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from headwater.cli.options import (
    CertOpt,
    ConfigOpt,
    DirOpt,
    HostOpt,
    KeyOpt,
    MqttUrlOpt,
    PortOpt,
    load_or_exit,
)
from headwater.settings import Settings

app = typer.Typer(no_args_is_help=True, help="Headwater: real-time data processing in one process.")


def _settings(
    host: str | None, port: int | None, data_dir: Path | None, config: Path | None, **kw: Any
) -> Settings:
    return load_or_exit(config, host=host, port=port, data_dir=data_dir, **kw)


def run_server(settings: Settings, profile: str = "serve", intro: str = "") -> None:
    """Serve until a signal; a server that cannot start says why in one line, exit code 1."""
    from headwater.cli.serve import StartupError, run_server

    try:
        run_server(settings, profile, intro)
    except StartupError as exc:
        typer.echo(f"headwater: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:  # Ctrl-C: the server has shut down in order
        raise typer.Exit(130) from None


@app.callback()
def _root() -> None:
    """Headwater: real-time data processing in one process."""


@app.command()
def serve(
    host: HostOpt = None, port: PortOpt = None, data_dir: DirOpt = None, config: ConfigOpt = None,
    tls_cert: CertOpt = None, tls_key: KeyOpt = None,
) -> None:  # fmt: skip
    """Run the server: ingest, pipelines, store and API in one process."""
    run_server(_settings(host, port, data_dir, config, tls_cert=tls_cert, tls_key=tls_key))


@app.command()
def demo(
    host: HostOpt = None, port: PortOpt = None, data_dir: DirOpt = None, config: ConfigOpt = None,
    tls_cert: CertOpt = None, tls_key: KeyOpt = None, mqtt_url: MqttUrlOpt = None,
) -> None:  # fmt: skip
    """Run the server with a simulated IoT fleet, a `readings` stream and sample pipelines."""
    settings = _settings(host, port, data_dir, config, tls_cert=tls_cert, tls_key=tls_key,
                         demo_mqtt_url=mqtt_url)  # fmt: skip
    base = f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}"
    intro = (
        "[bold]Headwater demo[/]: simulated devices stream into [cyan]readings[/]; pipelines "
        "[cyan]device_minute[/], [cyan]category_stats[/], [cyan]anomalies[/] run on it.\n"
        f"  dashboard   {base}/\n  API docs    {base}/docs\n"
        f"  demo API    {base}/api/v1/processed-data  {base}/api/v1/raw-data\n"
        f"  start/stop  POST {base}/api/v1/start-ingestion  /api/v1/stop-ingestion"
        "  (ingestion is running)"
    )
    if settings.demo_mqtt_url:
        scheme, _, rest = settings.demo_mqtt_url.partition("://")
        broker = f"{scheme}://{rest.rpartition('@')[2]}"  # no credentials on the screen
        intro += (
            f"\n  MQTT fleet  publishing to {broker} (fleet/<device>/telemetry),"
            " read back into [cyan]fleet_telemetry[/]"
        )
    run_server(settings, "demo", intro)


def _client_commands() -> None:
    """Commands that talk to a running server over its HTTP API."""
    from headwater.cli import keys, logcmd, send, sql, status, tail

    app.command("status")(status.status)
    app.command("send")(send.send)
    app.command("sql")(sql.sql)
    app.command("tail")(tail.tail)
    app.add_typer(keys.app, name="keys")
    app.add_typer(logcmd.app, name="log")


_client_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
