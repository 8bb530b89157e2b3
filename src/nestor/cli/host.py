from __future__ import annotations

import sys
from typing import Any

import click

from ..service import Service
from ..service.types import HostPolicy, to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, fields


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
    # The home's policy, where the home exists (a missing one is not made: allow is the default)
    policy = ctx.service.host_policy() if ctx.remote or ctx.home.joinpath("nestor.db").exists() else None
    if output == "json":
        emit_json({"facts": report.facts, "checks": [to_json(c) for c in report.checks],
                   "policy": to_json(policy) if policy is not None else {"nesting": "allow", "changed": None}})
        return
    _print_checks(report.checks)
    click.echo(f"[info] nesting policy: {policy_line(policy)}")
    if not report.ok:
        sys.exit(1)


def policy_line(policy: HostPolicy | None) -> str:
    if policy is None or policy.nesting == "allow":
        return "allow (nestor host set --nesting block refuses nested virtualization on this host)"
    line = f"block (rule {policy.rule}): no VM may turn nesting on or start with it; nestor host set --nesting allow"
    if policy.running_nested:
        line += f"; running with nesting on (not stopped by the block): {', '.join(policy.running_nested)}"
    return line


@host.command("set")
@click.option("--nesting", type=click.Choice(["block", "allow"]), default=None,
              help="block: refuse turning nested virtualization on, and starting a VM that has it")
@OUTPUT
@pass_ctx
def set_(ctx: Ctx, nesting: str | None, output: str) -> None:
    """Set this host's policy (stored in the home's database)."""
    policy = ctx.service.host_set_policy(nesting)
    _show_policy(policy, output)


@host.command("policy")
@OUTPUT
@pass_ctx
def policy_(ctx: Ctx, output: str) -> None:
    """This host's policy: nesting allow | block, and the VMs with nesting on."""
    _show_policy(ctx.service.host_policy(), output)


def _show_policy(policy: HostPolicy, output: str) -> None:
    if output == "json":
        emit_json(to_json(policy))
        return
    from datetime import UTC, datetime

    fields({"nesting": policy.nesting, "rule": policy.rule,
            "changed": datetime.fromtimestamp(policy.changed, UTC).isoformat(timespec="seconds") if policy.changed else None,
            "nested_vms": ", ".join(policy.nested_vms) or None,
            "running_nested": ", ".join(policy.running_nested) or None})


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
