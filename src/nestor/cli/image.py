from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput
from ..service.guest_types import StoredImageInfo
from ..service.types import to_json
from .context import AT, Ctx, pass_ctx
from .output import OUTPUT, progress, rows_out
from .present import human_size


@click.group()
def image() -> None:
    """Guest images built from Debian packages, and imported disk images."""


@image.command("build")
@click.argument("name", type=click.Choice(["appliance", "nested-host", "debian"]))
@click.option("--force", is_flag=True, help="rebuild even if cached")
@click.option("--release", default=None, help="debian: the Debian release (default: bookworm)")
@click.option("--packages", default=None, help="debian: more packages, comma-separated")
@click.option("--size", default=None, help="debian: the disk's size (default: 8G)")
@click.option("--name", "image_name", default=None, help="debian: the image's name (default: debian-RELEASE)")
@AT
@pass_ctx
def build(ctx: Ctx, name: str, force: bool, release: str | None, packages: str | None, size: str | None,
          image_name: str | None, at: str) -> None:
    """Build (or reuse) an image."""
    if name == "debian":
        from ..images.debian import DEFAULT_RELEASE, DEFAULT_SIZE, DebianRequest
        from ..model import parse_size

        request = DebianRequest(
            release=release or DEFAULT_RELEASE,
            packages=tuple(p.strip() for p in (packages or "").split(",") if p.strip()),
            size=parse_size(size, "image") if size else DEFAULT_SIZE,
            name=image_name,
        )
        with ctx.level(at, local=True) as level:
            stored = level.image_build_debian(request, progress, force=force)
        click.echo(f"image {stored.name}: {stored.path}")
        return
    if release or packages or size or image_name:
        raise InvalidInput("--release, --packages, --size and --name are for `image build debian`",
                           hint=f"nestor image build {name} [--force]")
    with ctx.level(at, local=True) as level:
        info = level.image_build(name, progress, force=force)
    click.echo(f"image {name}: {info.path}")


def _stored_row(image: StoredImageInfo, output: str) -> dict[str, Any]:
    row: dict[str, Any] = {"built": True, **to_json(image)}
    if output != "json":
        row.update(virtual_size=human_size(image.virtual_size), allocated=human_size(image.allocated),
                   used_by=", ".join(image.used_by) or None)
    return row


@image.command("list")
@OUTPUT
@AT
@pass_ctx
def list_(ctx: Ctx, output: str, at: str) -> None:
    """The built-in images, and the store's disk images: format, sizes, the VMs using them."""
    with ctx.level(at, local=True) as level:
        rows = [to_json(i) for i in level.image_list()]
        rows += [_stored_row(i, output) for i in level.image_store_list()]
    rows_out(rows, output, ["name", "built", "format", "virtual_size", "allocated", "used_by", "path"])


@image.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="the image's name (default: from the file name)")
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]), default=None,
              help="the file's format (a raw disk must be named raw: any file reads as raw)")
@click.option("--force", is_flag=True, help="import even if its virtual size exceeds the free space")
@AT
@pass_ctx
def import_(ctx: Ctx, file: Path, name: str | None, fmt: str | None, force: bool, at: str) -> None:
    """Import a qcow2 or raw disk image (checked with qemu-img info, stored as qcow2; with --at a
    file of that level's machine)."""
    with ctx.level(at, local=True) as level:
        stored = level.image_import(file, name, progress, fmt=fmt, force=force)
    click.echo(f"image {stored.name}: {stored.path} ({human_size(stored.virtual_size)})")


@image.command("remove")
@click.argument("name")
@AT
@pass_ctx
def remove(ctx: Ctx, name: str, at: str) -> None:
    """Remove a stored image (refused while a VM uses it)."""
    with ctx.level(at, local=True) as level:
        level.image_remove(name)
    click.echo(f"image '{name}' removed")
