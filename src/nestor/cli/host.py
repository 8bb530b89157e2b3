from __future__ import annotations

import sys

import click

from ..service.types import to_json
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
    report = ctx.service.host_check()
    if output == "json":
        emit_json({"facts": report.facts, "checks": [to_json(c) for c in report.checks]})
        return
    for c in report.checks:
        mark = "pass" if c.ok else "FAIL"
        click.echo(f"[{mark}] {c.name}: {c.detail}")
        if c.fix:
            click.echo(f"       fix: {c.fix}")
    if not report.ok:
        sys.exit(1)


# libvirt hosts (issue 12): add, list, show, remove live in cli/hosts.py.
from .hosts import register_host_commands  # noqa: E402

register_host_commands(host)
