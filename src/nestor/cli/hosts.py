"""`nestor host add|list|show|remove` (libvirt hosts) and `nestor vm move`, over the service facade."""

from __future__ import annotations

from typing import Any

import click

from ..model import format_size
from ..service.types import HostInfo, to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, fields, progress, rows_out

HOST_COLUMNS = ["name", "uri", "reachable", "vendor", "nesting", "free_memory", "vms", "error"]


def _size(value: int | None) -> str | None:
    return None if value is None else format_size(value // (1 << 20) << 20) if value else "0"


def row(info: HostInfo) -> dict[str, Any]:
    return {
        "name": info.name, "uri": info.uri, "reachable": info.reachable, "vendor": info.vendor,
        "nesting": None if info.nesting is None else (info.nesting_flag if info.nesting else "no"),
        "free_memory": _size(info.free_memory), "vms": info.vms, "error": info.error,
    }


@click.command("add")
@click.argument("name")
@click.argument("uri")
@OUTPUT
@pass_ctx
def add(ctx: Ctx, name: str, uri: str, output: str) -> None:
    """Register a libvirt host (qemu+ssh://HOST/system, qemu+tcp://…, qemu+tls://…, test:///default)."""
    info = ctx.local.host_add(name, uri)
    if output == "json":
        emit_json(to_json(info))
        return
    shown = row(info)
    click.echo(f"host '{name}' added: {shown['vendor'] or 'vendor unknown'}, nesting {shown['nesting']}, "
               f"{shown['free_memory']} free, {shown['vms']} VM(s)")


@click.command("list")
@OUTPUT
@pass_ctx
def list_(ctx: Ctx, output: str) -> None:
    """The libvirt hosts with what each can offer (read from libvirt now)."""
    infos = ctx.local.host_list()
    if output == "json":
        emit_json(to_json(infos))
        return
    rows_out([row(i) for i in infos], output, HOST_COLUMNS, empty="no libvirt hosts (nestor host add NAME URI)")


@click.command("show")
@click.argument("name")
@OUTPUT
@pass_ctx
def show(ctx: Ctx, name: str, output: str) -> None:
    """One libvirt host: capabilities, nesting and why, memory, nestor's VMs on it."""
    info = ctx.local.host_show(name)
    data: dict[str, Any] = to_json(info)
    if output == "json":
        emit_json(data)
        return
    for key in ("memory_total", "free_memory"):
        data[key] = _size(data[key])
    data["cpu_modes"] = ", ".join(data["cpu_modes"]) or None
    data["vm_names"] = ", ".join(data["vm_names"]) or None
    fields(data)


@click.command("remove")
@click.argument("name")
@pass_ctx
def remove(ctx: Ctx, name: str) -> None:
    """Forget a libvirt host (refused while nestor has VMs on it)."""
    ctx.local.host_remove(name)
    click.echo(f"host '{name}' removed")


def register_host_commands(group: click.Group) -> None:
    for command in (add, list_, show, remove):
        group.add_command(command)


@click.command("move")
@click.argument("name")
@click.option("--host", "host", required=True, help="the libvirt host to move the VM to")
@pass_ctx
def move(ctx: Ctx, name: str, host: str) -> None:
    """Live-migrate a VM to another libvirt host (refused while a hypervisor runs inside it).

    A disk the destination does not have (no pool there holds its path) is copied while the VM
    runs, into a new volume in the destination's storage pool 'default'."""
    result = ctx.local.vm_move(name, host, progress)
    click.echo(f"vm '{name}' moved to host '{result.dest}'" + (" (live)" if result.live else "")
               + (f"; disk copied to {result.disk_copied_to}" if result.disk_copied_to else ""))
