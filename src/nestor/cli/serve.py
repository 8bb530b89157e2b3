"""`nestor serve` (the daemon) and `nestor token` (bearer tokens for the API over TCP)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from .context import Ctx, pass_ctx
from .output import OUTPUT, rows_out


@click.command("serve")
@click.option("--socket", "socket_path", type=click.Path(path_type=Path), default=None,
              help="unix socket (default: /run/nestor/nestor.sock for the default home)")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="also serve over TCP with TLS (CA under HOME/tls/); every request needs a bearer token")
@click.option("--on-demand", is_flag=True, help="exit once no VM has run for a minute")
@click.option("--channel", type=click.Path(path_type=Path), default=None,
              help="in a nested-host guest: the virtio-serial port of the host's channel")
@click.option("--files", "files_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="the directory whose files API callers may name (--iso, --run, image import…; default: HOME/uploads)")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="a Host name the API answers for besides localhost, 127.0.0.1 and [::1] "
                   "(a browser's Host through a forward or a proxy; repeatable)")
@pass_ctx
def serve(ctx: Ctx, socket_path: Path | None, listen: str | None, on_demand: bool, channel: Path | None,
          files_dir: Path | None, allow_hosts: tuple[str, ...]) -> None:
    """Run the daemon: the API, events, the memory balancer of every dynamic VM and the serial-log cap."""
    from .. import stopping

    stopping.catch()  # first (nestor/__main__.py did already when run as python -m nestor)
    from ..api import server

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(server.serve(ctx.home.resolve(), socket_path, ctx.netns, on_demand=on_demand, channel=channel,
                          listen=listen, files_dir=files_dir.resolve() if files_dir else None,
                          allow_hosts=allow_hosts))


@click.group("token")
def token() -> None:
    """Bearer tokens for the API over TCP."""


@token.command("new")
@click.argument("name")
@pass_ctx
def token_new(ctx: Ctx, name: str) -> None:
    """Create a token; it is shown once (only its hash is kept)."""
    from .. import paths
    from ..api import tokens

    paths.check_takeover(paths.check_home(ctx.home), create=True)
    click.echo(tokens.new(ctx.home, name))


@token.command("list")
@OUTPUT
@pass_ctx
def token_list(ctx: Ctx, output: str) -> None:
    """The tokens' names (never the tokens)."""
    from ..api import tokens

    rows_out(tokens.list_(ctx.home), output, ["name", "created"], empty="no tokens")


@token.command("revoke")
@click.argument("name")
@pass_ctx
def token_revoke(ctx: Ctx, name: str) -> None:
    """Delete a token: requests with it are refused from now on."""
    from ..api import tokens

    tokens.revoke(ctx.home, name)
    click.echo(f"token '{name}' revoked")
