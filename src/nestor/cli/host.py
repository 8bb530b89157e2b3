from __future__ import annotations

import sys

import click

from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json


@click.group()
def host() -> None:
    """This host's prerequisites, and the libvirt hosts nestor runs VMs on."""


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


# libvirt hosts (issue 12): add, list, show, remove live in cli/hosts.py.
from .hosts import register_host_commands  # noqa: E402

register_host_commands(host)
