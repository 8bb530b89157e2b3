from __future__ import annotations

import click

from ..service.types import to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, progress, rows_out


@click.group()
def image() -> None:
    """Guest images built from Debian packages."""


@image.command("build")
@click.argument("name", type=click.Choice(["appliance", "nested-host"]))
@click.option("--force", is_flag=True, help="rebuild even if cached")
@pass_ctx
def build(ctx: Ctx, name: str, force: bool) -> None:
    """Build (or reuse) an image."""
    info = ctx.local.image_build(name, progress, force=force)
    click.echo(f"image {name}: {info.path}")


@image.command("list")
@OUTPUT
@pass_ctx
def list_(ctx: Ctx, output: str) -> None:
    """The images and whether they are built."""
    rows = [to_json(i) for i in ctx.local.image_list()]
    rows_out(rows, output, ["name", "built", "path"])
