"""`vm ssh`, `vm disk …` and `vm checkpoint …` for disk-image guests; registered on the `vm` group."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..model import parse_size
from ..service.guest_types import CheckpointInfo, DiskInfo
from ..service.types import to_json
from .context import Ctx, pass_ctx
from .output import OUTPUT, emit_json, rows_out
from .present import human_size


def _disk_row(disk: DiskInfo, output: str) -> dict[str, Any]:
    row: dict[str, Any] = to_json(disk)
    if output != "json":
        row.update(virtual_size=human_size(disk.virtual_size), allocated=human_size(disk.allocated))
    return row


def _checkpoint_row(cp: CheckpointInfo, output: str) -> dict[str, Any]:
    row: dict[str, Any] = to_json(cp)
    if output != "json":
        row.update(created=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cp.created)),
                   memory_size=human_size(cp.memory_size) if cp.memory else None)
    return row


@click.command("ssh", context_settings={"ignore_unknown_options": True})
@click.option("-i", "--identity", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="the private key to log in with (default: the one beside the VM's public key, or ssh's own)")
@click.argument("name")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_ctx
def ssh(ctx: Ctx, identity: Path | None, name: str, command: tuple[str, ...]) -> None:
    """Log in with ssh, or run `-- CMD` (as ssh does, the guest's login shell runs CMD).

    The address comes from the DHCP lease, the guest agent or `adapter set --ip`."""
    argv = ctx.local.vm_ssh_argv(ctx.only_here(name, "ssh"), list(command), identity)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


@click.group("disk")
def disk() -> None:
    """A disk-image VM's disks (qcow2)."""


@disk.command("add")
@click.argument("vm")
@click.option("--name", required=True, help="the disk's name")
@click.option("--size", required=True, help="e.g. 10G")
@pass_ctx
def disk_add(ctx: Ctx, vm: str, name: str, size: str) -> None:
    """Add an empty data disk (while the VM is off)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        disk = level.vm_disk_add(vm_name, name, parse_size(size, "disk"))
    click.echo(f"disk '{disk.name}' ({human_size(disk.virtual_size)}) added to vm '{vm}'")


@disk.command("list")
@click.argument("vm")
@OUTPUT
@pass_ctx
def disk_list(ctx: Ctx, vm: str, output: str) -> None:
    """The VM's disks: virtual and allocated size, the image under the root disk."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        disks = level.vm_disk_list(vm_name)
    rows_out([_disk_row(d, output) for d in disks], output,
             ["name", "virtual_size", "allocated", "image", "file"])


@disk.command("resize")
@click.argument("vm")
@click.argument("name")
@click.option("--size", required=True, help="the new size (disks only grow)")
@pass_ctx
def disk_resize(ctx: Ctx, vm: str, name: str, size: str) -> None:
    """Grow a disk; a running VM sees the new size at once (QMP block_resize)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        result = level.vm_disk_resize(vm_name, name, parse_size(size, "disk"))
    click.echo(f"disk '{name}' of vm '{vm}' is now {human_size(result.disk.virtual_size)} "
               f"({'online' if result.online else 'offline'})")


@disk.command("remove")
@click.argument("vm")
@click.argument("name")
@pass_ctx
def disk_remove(ctx: Ctx, vm: str, name: str) -> None:
    """Remove a data disk and its file (while the VM is off)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        level.vm_disk_remove(vm_name, name)
    click.echo(f"disk '{name}' removed from vm '{vm}'")


@click.group("checkpoint")
def checkpoint() -> None:
    """Checkpoints (qcow2 internal snapshots; with memory while the VM runs)."""


@checkpoint.command("new")
@click.argument("vm")
@click.argument("name")
@OUTPUT
@pass_ctx
def checkpoint_new(ctx: Ctx, vm: str, name: str, output: str) -> None:
    """Take a checkpoint (Hyper-V: Checkpoint-VM)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        result = level.vm_checkpoint_new(vm_name, name)
    if output == "json":
        emit_json(to_json(result))
    else:
        click.echo(f"checkpoint '{name}' of vm '{vm}' taken in {result.seconds} s")


@checkpoint.command("list")
@click.argument("vm")
@OUTPUT
@pass_ctx
def checkpoint_list(ctx: Ctx, vm: str, output: str) -> None:
    """The VM's checkpoints (Hyper-V: Get-VMCheckpoint)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        checkpoints = level.vm_checkpoint_list(vm_name)
    rows_out([_checkpoint_row(c, output) for c in checkpoints], output,
             ["name", "created", "memory", "memory_size", "tpm"], empty="no checkpoints")


@checkpoint.command("apply")
@click.argument("vm")
@click.argument("name")
@OUTPUT
@pass_ctx
def checkpoint_apply(ctx: Ctx, vm: str, name: str, output: str) -> None:
    """Go back to a checkpoint (Hyper-V: Restore-VMCheckpoint)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        result = level.vm_checkpoint_apply(vm_name, name)
    if output == "json":
        emit_json(to_json(result))
    else:
        click.echo(f"vm '{vm}' is back at checkpoint '{name}' ({result.seconds} s)")
        if result.tpm_restored is not None:
            click.echo(f"vm '{vm}': TPM {'on' if result.tpm_restored else 'off'} again, as at the checkpoint")


@checkpoint.command("remove")
@click.argument("vm")
@click.argument("name")
@pass_ctx
def checkpoint_remove(ctx: Ctx, vm: str, name: str) -> None:
    """Delete a checkpoint (Hyper-V: Remove-VMCheckpoint)."""
    with ctx.vm(vm, local=True) as (level, vm_name):
        level.vm_checkpoint_remove(vm_name, name)
    click.echo(f"checkpoint '{name}' of vm '{vm}' removed")


def register(vm: click.Group) -> None:
    for command in (ssh, disk, checkpoint):
        vm.add_command(command)
