from __future__ import annotations

from typing import Any

import click

from ..service import guests
from ..service.types import to_json
from . import numbers
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, escape_controls


@click.command("tree")
@OUTPUT
@click.option("--timeout", type=numbers.FLOAT, default=guests.TREE_TIMEOUT, show_default=True,
              help="seconds to wait for each nested level")
@pass_ctx
def tree(ctx: Ctx, output: str, timeout: float) -> None:
    """Every VM on every level (L0→L1→L2…), through the guest agents."""
    data = to_json(ctx.service.tree(timeout=timeout))
    if output == "json":
        emit_json(data)
        return
    print_tree(data)
    for host in data.get("hosts", []):  # libvirt hosts (issue 12), then their VMs
        state = "" if host["reachable"] else f"  unreachable: {host['error']}"
        click.echo(escape_controls(f"{host['host']} (L{host['level']}, libvirt {host['uri']}){state}", keep=""))
        _print(host["vms"], "")


def print_tree(data: dict[str, Any]) -> None:
    click.echo(escape_controls(f"{data['host']} (L{data.get('level', 0)})", keep=""))
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
        # A node's fields may come from a guest (its error quotes what it sent): one line, no escape.
        click.echo(f"{indent}{'└── ' if last else '├── '}{escape_controls('  '.join(map(str, parts)), keep='')}")
        _print(node.get("children", []), indent + ("    " if last else "│   "))
