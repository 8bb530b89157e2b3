"""`nestor bugreport [PATH]`: one archive with what a bug report needs from every level."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import time
from pathlib import Path

import click

from ..errors import InvalidInput
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json


@click.command("bugreport")
@click.argument("path", required=False, default="")
@click.option("--file", "out", type=click.Path(path_type=Path), default=None,
              help="the archive to write (default: ./nestor-bugreport-HOST-TIME.tar.gz)")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="seconds for the levels below")
@OUTPUT
@pass_ctx
def bugreport(ctx: Ctx, path: str, out: Path | None, timeout: float, output: str) -> None:
    """Versions, host check, CPU flags, kvm parameters, kernel log, and each VM's QEMU argv and log
    tails, for this level (or the VM at PATH) and every level below it. Tokens, keys and
    cloud-init user data are left out."""
    from ..service import report

    data = ctx.local.bugreport(path, timeout=timeout)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    top = f"nestor-bugreport-{socket.gethostname()}-{stamp}"
    out = out or Path(f"{top}.tar.gz")
    members = report.archive_members(data, f"{top}/{path or 'L0'}")
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # logs are private; never overwrite
    except FileExistsError:
        raise InvalidInput(f"{out} exists: a bug report never overwrites a file", hint="give another --file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot write {out}: {exc.strerror}", hint="give another --file") from None
    with os.fdopen(fd, "wb") as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        for name, text in members:
            blob = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(blob), int(time.time()), 0o600
            tar.addfile(info, io.BytesIO(blob))
    levels = report.level_paths(data, path or "L0")
    if output == "json":
        emit_json({"archive": str(out), "files": len(members), "levels": levels})
        return
    click.echo(f"wrote {out} ({len(members)} files, {len(levels)} level(s))")
