"""`nestor remote add/list/remove`: other nestor hosts, reached with `nestor --remote NAME …`."""

from __future__ import annotations

from pathlib import Path

import click

from .. import api_remotes
from .context import Ctx, pass_ctx
from .output import OUTPUT, rows_out


@click.group("remote")
def remote() -> None:
    """Other nestor hosts (their API over TLS); use one with `nestor --remote NAME …`."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--token", default=None, help="a bearer token made there with `nestor token new`")
@click.option("--ca", type=click.Path(path_type=Path), default=None,
              help="that daemon's CA certificate (its HOME/tls/ca.crt); default: the system's CAs")
@pass_ctx
def add(ctx: Ctx, name: str, url: str, token: str | None, ca: Path | None) -> None:
    """Remember a remote: URL is https://HOST:PORT (or unix:/PATH for a local daemon)."""
    api_remotes.add(ctx.home, name, url, token, ca)
    click.echo(f"remote '{name}' added")


@remote.command("list")
@OUTPUT
@pass_ctx
def list_(ctx: Ctx, output: str) -> None:
    """The remotes (never their tokens)."""
    rows = [{"name": r.name, "url": r.url, "token": r.token is not None, "ca": r.ca_pem is not None}
            for r in api_remotes.list_(ctx.home)]
    rows_out(rows, output, ["name", "url", "token", "ca"], empty="no remotes")


@remote.command("remove")
@click.argument("name")
@pass_ctx
def remove(ctx: Ctx, name: str) -> None:
    """Forget a remote."""
    api_remotes.remove(ctx.home, name)
    click.echo(f"remote '{name}' removed")
