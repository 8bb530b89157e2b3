from __future__ import annotations

from typing import Any

import click

from .. import guest
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json


@click.command("tree")
@OUTPUT
@click.option("--timeout", type=float, default=guest.TREE_TIMEOUT, show_default=True,
              help="seconds to wait for each nested level")
@pass_ctx
def tree(ctx: Ctx, output: str, timeout: float) -> None:
    """Every VM on every level (L0→L1→L2…), through the guest agents."""
    data = guest.tree(ctx.service, timeout=timeout)
    data["hosts"] = _libvirt_hosts(ctx)  # libvirt hosts (issue 12), each with its VMs
    if output == "json":
        emit_json(data)
        return
    print_tree(data)
    if data["hosts"]:
        from .hosts import print_hosts_tree

        print_hosts_tree(data["hosts"])


def _libvirt_hosts(ctx: Ctx) -> list[dict[str, Any]]:
    from . import hosts as hosts_cli

    if not hosts_cli._db(ctx.home).execute("SELECT 1 FROM hosts LIMIT 1").fetchone():
        return []  # no libvirt hosts: do not load the binding (tree runs inside every L1)
    return hosts_cli.service(ctx).tree()


def print_tree(data: dict[str, Any]) -> None:
    click.echo(f"{data['host']} (L0)")
    _print(data["vms"], "")


def _print(nodes: list[dict[str, Any]], indent: str) -> None:
    for index, node in enumerate(nodes):
        last = index == len(nodes) - 1
        parts = [f"{node['name']} (L{node['level']})", node["state"], f"{node['vcpus']} vCPU", node["memory"]]
        if node["nested"]:
            parts.append("nested")
        if node.get("hypervisor_running") is not None:
            parts.append(f"hypervisor running: {'yes' if node['hypervisor_running'] else 'no'}")
        if node.get("reachable") is False:
            parts.append(f"unreachable: {node.get('error')}")
        click.echo(f"{indent}{'└── ' if last else '├── '}{'  '.join(parts)}")
        _print(node.get("children", []), indent + ("    " if last else "│   "))
