"""``headwater keys``: API keys made with local access to the data dir.

For the one who runs the server and lost the admin key: the command opens the catalog in
the data dir directly (a running server sees the new key at once), so it needs no key.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated

import typer

from headwater.cli.options import DirOpt, load_or_exit

app = typer.Typer(no_args_is_help=True, help="API keys, made with local access to the data dir.")


class RoleName(StrEnum):
    admin = "admin"
    writer = "writer"
    reader = "reader"


@app.command("create")
def create(
    role: Annotated[
        RoleName, typer.Option(help="What the key may do: admin, writer (ingest) or reader.")
    ],
    tenant: Annotated[str, typer.Option(help="The tenant the key belongs to.")] = "default",
    name: Annotated[
        str | None, typer.Option(help="A label for the key \\[default: none]", show_default=False)
    ] = None,
    data_dir: DirOpt = None,
) -> None:
    """Make a new key and print it (on stdout, alone, so that scripts can capture it)."""
    from headwater.catalog.sqlite import Catalog
    from headwater.errors import HeadwaterError

    settings = load_or_exit(None, data_dir=data_dir)
    if not settings.catalog_path.exists():
        typer.echo(
            f"headwater: no catalog in {settings.data_dir}; start the server there once "
            f"(headwater serve --data-dir {settings.data_dir}) or pass the right --data-dir",
            err=True,
        )
        raise typer.Exit(1)
    catalog = Catalog(settings.catalog_path)
    try:
        secret, key = catalog.create_key(tenant, role.value, int(time.time() * 1000), name or "cli")
    except HeadwaterError as exc:
        typer.echo(f"headwater: {exc}; tenants: {', '.join(catalog.tenants())}", err=True)
        raise typer.Exit(1) from None
    finally:
        catalog.close()
    typer.echo(f"Created {key.role} key {key.id} for tenant {key.tenant!r}:", err=True)
    typer.echo(secret)
