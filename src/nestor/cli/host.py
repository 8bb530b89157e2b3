from __future__ import annotations

import sys

import click

from ..host import facts as host_facts
from ..policy.checks import host_checks
from .output import OUTPUT, emit_json


@click.group()
def host() -> None:
    """The host's prerequisites."""


@host.command("check")
@OUTPUT
def check(output: str) -> None:
    """Prerequisites, accelerator (kvm | tcg and why), nesting ability."""
    facts = host_facts.probe()
    checks = host_checks(facts)
    if output == "json":
        emit_json({"facts": facts.to_json(), "checks": [c.to_json() for c in checks]})
        return
    for c in checks:
        mark = "pass" if c.ok else "FAIL"
        click.echo(f"[{mark}] {c.name}: {c.detail}")
        if c.fix:
            click.echo(f"       fix: {c.fix}")
    sys.stdout.flush()
