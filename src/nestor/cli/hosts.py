"""`nestor host add|list|show|remove` and the VM commands for VMs on libvirt hosts.

cli/host.py and cli/vm.py hand over to these functions; the use cases are nestor.remote.hosts.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .. import paths
from ..errors import HostError, InvalidInput
from ..model import format_size, parse_size
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, fields, progress, rows_out, warn

if TYPE_CHECKING:
    from ..remote.hosts import Hosts

HOST_COLUMNS = ["name", "uri", "reachable", "vendor", "nesting", "free_memory", "vms", "error"]


@functools.cache
def _db(home: Path) -> sqlite3.Connection:
    from ..state import db

    return db.connect(paths.Home(home).db)


def service(ctx: Ctx) -> Hosts:
    try:
        from ..remote.hosts import Hosts
    except ImportError as exc:  # the `libvirt` extra is not installed (an L1's payload has no binding)
        raise HostError(f"the libvirt Python binding is not installed ({exc})",
                        hint="bash scripts/setup installs it (pip install -e '.[libvirt]')") from exc
    return Hosts(_db(ctx.home))


def remote_vm(ctx: Ctx, name: str) -> bool:
    """Is NAME a VM on a libvirt host (so the VM commands hand it to this module)?"""
    row = _db(ctx.home).execute("SELECT 1 FROM remote_vms WHERE name = ?", (name,)).fetchone()
    return row is not None


# -- host ------------------------------------------------------------------------------------------
@click.command("add")
@click.argument("name")
@click.argument("uri")
@OUTPUT
@pass_ctx
def add(ctx: Ctx, name: str, uri: str, output: str) -> None:
    """Register a libvirt host (qemu+ssh://HOST/system, qemu+tcp://…, qemu+tls://…, test:///default)."""
    view = service(ctx).add(name, uri)
    if output == "json":
        emit_json(view.to_json())
        return
    row = view.row()
    click.echo(f"host '{name}' added: {row['vendor'] or 'vendor unknown'}, nesting {row['nesting']}, "
               f"{row['free_memory']} free, {row['vms']} VM(s)")


@click.command("list")
@OUTPUT
@pass_ctx
def list_(ctx: Ctx, output: str) -> None:
    """The libvirt hosts with what each can offer (read from libvirt now)."""
    views = service(ctx).host_list()
    if output == "json":
        emit_json([v.to_json() for v in views])
        return
    rows_out([v.row() for v in views], output, HOST_COLUMNS, empty="no libvirt hosts (nestor host add NAME URI)")


@click.command("show")
@click.argument("name")
@OUTPUT
@pass_ctx
def show(ctx: Ctx, name: str, output: str) -> None:
    """One libvirt host: capabilities, nesting and why, memory, nestor's VMs on it."""
    view, vms = service(ctx).show(name)
    data = view.to_json()
    data["nestor_vm_names"] = [vm.name for vm in vms]
    if output == "json":
        data["vm_details"] = [vm.to_json() for vm in vms]
        emit_json(data)
        return
    for key in ("memory_total", "free_memory"):
        if isinstance(data.get(key), int):
            data[key] = format_size(data[key] // (1 << 20) << 20)
    data["cpu_modes"] = ", ".join(data.get("cpu_modes") or []) or None
    data["nestor_vm_names"] = ", ".join(data["nestor_vm_names"]) or None
    fields(data)


@click.command("remove")
@click.argument("name")
@pass_ctx
def remove(ctx: Ctx, name: str) -> None:
    """Forget a libvirt host (refused while nestor has VMs on it)."""
    service(ctx).remove(name)
    click.echo(f"host '{name}' removed")


def register_host_commands(group: click.Group) -> None:
    for command in (add, list_, show, remove):
        group.add_command(command)


# -- vm, for VMs on libvirt hosts -------------------------------------------------------------------
def vm_new(ctx: Ctx, name: str, host: str, vcpus: int, memory: int, nested: bool, maximum: str | None,
           disk: str | None, network: str | None, kernel: str | None, initrd: str | None, append: str | None) -> None:
    vm, chosen, warnings = service(ctx).vm_new(
        name, host, vcpus=vcpus, memory=memory, nested=nested,
        maximum=parse_size(maximum, "maximum") if maximum else None, disk=disk, network=network,
        kernel=kernel, initrd=initrd, append=append)
    for message in warnings:
        warn(message)
    if chosen is not None:
        click.echo(f"placed on host '{chosen.host}': {chosen.reason}")
    click.echo(f"vm '{vm.name}' created on host '{chosen.host if chosen else host}'")


def vm_rows(ctx: Ctx) -> list[dict[str, object]]:
    if not _db(ctx.home).execute("SELECT 1 FROM remote_vms LIMIT 1").fetchone():
        return []  # none: do not load the binding
    return [info.to_json() for info in service(ctx).vm_list()]


def vm_show(ctx: Ctx, name: str, output: str) -> None:
    data = service(ctx).vm_show(name).to_json()
    if output == "json":
        emit_json(data)
        return
    data["hypervisor running inside"] = data.pop("hypervisor_running")
    fields(data)


def vm_start(ctx: Ctx, name: str) -> None:
    info = service(ctx).vm_start(name)
    click.echo(f"vm '{name}' started on host '{info.host}' ({info.state})")


def vm_stop(ctx: Ctx, name: str, turn_off: bool, timeout: float) -> None:
    click.echo(f"vm '{name}' {service(ctx).vm_stop(name, turn_off=turn_off, timeout=timeout)}")


def vm_remove(ctx: Ctx, name: str, force: bool) -> None:
    service(ctx).vm_remove(name, force=force)
    click.echo(f"vm '{name}' removed")


def vm_set_processor(ctx: Ctx, name: str, count: int | None, nested: bool | None) -> None:
    for message in service(ctx).vm_set_processor(name, count=count, nested=nested):
        warn(message)
    click.echo(f"vm '{name}' processor updated")


def vm_set_memory(ctx: Ctx, name: str, startup: str | None, others: bool) -> None:
    if others or startup is None:
        raise InvalidInput(f"vm '{name}' is on a libvirt host: only --startup can be set there",
                           hint=f"nestor vm set-memory {name} --startup SIZE")
    click.echo(service(ctx).vm_set_memory(name, parse_size(startup, "startup")))


def vm_save(ctx: Ctx, name: str) -> None:
    service(ctx).vm_save(name)
    click.echo(f"vm '{name}' saved (libvirt managed save; nestor vm start {name} resumes it)")


@click.command("move")
@click.argument("name")
@click.option("--host", "host", required=True, help="the libvirt host to move the VM to")
@pass_ctx
def move(ctx: Ctx, name: str, host: str) -> None:
    """Live-migrate a VM to another libvirt host (refused while a hypervisor runs inside it)."""
    click.echo(service(ctx).vm_move(name, host, progress))


def print_hosts_tree(nodes: list[dict[str, object]]) -> None:
    for node in nodes:
        state = "" if node["reachable"] else f"  unreachable: {node['error']}"
        click.echo(f"{node['host']} (L0, libvirt {node['uri']}){state}")
        vms = node["vms"]
        assert isinstance(vms, list)
        for index, vm in enumerate(vms):
            last = index == len(vms) - 1
            parts = [f"{vm['name']} (L1)", vm["state"], f"{vm['vcpus']} vCPU", vm["memory"]]
            if vm["nested"]:
                parts.append("nested")
            click.echo(f"{'└── ' if last else '├── '}{'  '.join(parts)}")

