from __future__ import annotations

import sys
from typing import Any

import click

from ..service import Service
from ..service.types import to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json


@click.group()
def host() -> None:
    """This host's prerequisites, and the libvirt hosts nestor runs VMs on."""


@host.command("check")
@click.option("--tree", "whole_tree", is_flag=True, help="also every level below: the nestor inside each nested-host VM")
@OUTPUT
@pass_ctx
def check(ctx: Ctx, output: str, whole_tree: bool) -> None:
    """Prerequisites, accelerator (kvm | tcg and why), nesting ability."""
    if whole_tree:
        _check_tree(ctx, output)
        return
    report = Service.host_check()  # no home needed: a missing one is neither refused nor made
    if output == "json":
        emit_json({"facts": report.facts, "checks": [to_json(c) for c in report.checks]})
        return
    _print_checks(report.checks)
    if not report.ok:
        sys.exit(1)


def _print_checks(checks: list[Any], indent: str = "") -> None:
    for c in checks:
        c = c if isinstance(c, dict) else to_json(c)
        mark = "pass" if c["ok"] else "FAIL"
        click.echo(f"{indent}[{mark}] {c['name']}: {c['detail']}")
        if c.get("fix"):
            click.echo(f"{indent}       fix: {c['fix']}")


def _check_tree(ctx: Ctx, output: str) -> None:
    from ..service import report

    # A home with VMs: ask every level below too. No home: this level alone (a read-only command makes none).
    has_home = (ctx.home / "nestor.db").exists()
    data = ctx.local.host_check_tree() if has_home else report.level_check(Service.host_check(), {})
    if output == "json":
        emit_json(data)
    else:
        _print_level(data, "L0", "")
    if not _all_ok(data):
        sys.exit(1)


def _print_level(data: dict[str, Any], where: str, indent: str) -> None:
    if "error" in data:
        click.echo(f"{indent}{where}: unreachable: {data['error']}")
        return
    click.echo(f"{indent}{where} ({data['host']}):")
    _print_checks(data["checks"], indent + "  ")
    for vm, below in data["below"].items():
        _print_level(below, f"{where}/{vm}" if where != "L0" else vm, indent + "  ")


def _all_ok(data: dict[str, Any]) -> bool:
    """The prerequisites pass at every level that answered (an unreachable level is shown, not failed)."""
    return "error" in data or (bool(data["ok"]) and all(_all_ok(b) for b in data["below"].values()))


# libvirt hosts (issue 12): add, list, show, remove live in cli/hosts.py.
from .hosts import register_host_commands  # noqa: E402

register_host_commands(host)
