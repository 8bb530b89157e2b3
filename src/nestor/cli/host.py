from __future__ import annotations

import sys

import click

from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json


@click.group()
def host() -> None:
    """The host's prerequisites."""


@host.command("check")
@OUTPUT
@pass_ctx
def check(ctx: Ctx, output: str) -> None:
    """Prerequisites, accelerator (kvm | tcg and why), nesting ability."""
    facts, checks = ctx.service.host_check()
    if output == "json":
        emit_json({"facts": facts.to_json(), "checks": [c.to_json() for c in checks]})
        return
    for c in checks:
        mark = "pass" if c.ok else "FAIL"
        click.echo(f"[{mark}] {c.name}: {c.detail}")
        if c.fix:
            click.echo(f"       fix: {c.fix}")
    if not all(c.ok for c in checks if c.name in ("qemu", "accelerator")):
        sys.exit(1)
