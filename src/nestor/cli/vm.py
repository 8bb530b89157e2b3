from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InvalidInput
from ..model import format_size, parse_size, shown
from ..service import guests
from ..service.types import MemoryChange, MemoryOutcome, VMSpec
from . import console as serial_console
from . import numbers, present
from .context import AT, Ctx, pass_ctx
from .guest_options import guest_options, guest_spec, is_guest_request
from .output import OUTPUT, GuestOutput, emit_json, fields, rows_out, warn

ON_OFF = click.Choice(["on", "off"])


@click.group()
def vm() -> None:
    """Virtual machines."""


@vm.command("new")
@click.argument("name")
@click.option("--vcpus", type=numbers.INT, default=1, show_default=True)
@click.option("--memory", default="512M", show_default=True, help="e.g. 512M, 2G")
@click.option("--image", default=None,
              help="appliance | nested-host (default: appliance) | an image of `nestor image list`")
@click.option("--kernel", type=click.Path(path_type=Path), default=None)
@click.option("--initrd", type=click.Path(path_type=Path), default=None)
@click.option("--append", default="", help="extra kernel command line")
@click.option("--run", "run_script", type=click.Path(path_type=Path), default=None,
              help="appliance: a shell script the guest runs once userspace is up")
@click.option("--expose-virtualization-extensions", "--nested", "nested", is_flag=True,
              help="let the guest run its own hypervisor (seed: Set-VMProcessor -ExposeVirtualizationExtensions)")
@click.option("--config-version", default=None, help="VM configuration version (default: current)")
@click.option("--switch", "switches", multiple=True,
              help="connect an adapter to this switch (repeatable; default for disk-image VMs: the default switch)")
@click.option("--no-network", is_flag=True, help="no adapter (a disk-image VM gets none on the default switch)")
@click.option("--host", "host", default=None,
              help="a libvirt host (nestor host list), or 'auto': the most free memory among those that fit")
@click.option("--maximum", default=None, help="with --host: the memory the VM can grow to while running")
@click.option("--disk", default=None, help="with --host: a disk image file on that host")
@click.option("--network", default=None, help="with --host: a libvirt network on that host (MAC guard: clean-traffic)")
@guest_options
@AT
@pass_ctx
def new(ctx: Ctx, /, name: str, at: str, vcpus: int, memory: str, image: str | None, kernel: Path | None,
        initrd: Path | None, append: str, run_script: Path | None, nested: bool,
        config_version: str | None, switches: tuple[str, ...], no_network: bool, host: str | None,
        maximum: str | None, disk: str | None, network: str | None, **guest_flags: Any) -> None:
    """Define a new VM (it starts Off), here, on a libvirt host (--host) or at a level below (--at l1)."""
    guest = guest_spec(image, switches, {**guest_flags, "no_network": no_network})
    if no_network and switches:
        raise InvalidInput("--no-network excludes --switch", hint="give one of them")
    if is_guest_request(image, guest):  # a disk-image VM (service/diskvms.py)
        if host or maximum or disk or network:
            raise InvalidInput("--host/--maximum/--disk/--network are for VMs on libvirt hosts, not disk-image VMs",
                               hint="drop them, or drop --image/--iso and the guest flags")
        if kernel or initrd or run_script or append:
            raise InvalidInput("--kernel/--initrd/--append/--run are for the appliance; a disk-image VM boots its disk",
                               hint="drop them, or drop --image/--iso and the guest flags")
        with ctx.level(at, local=True) as level:
            result = level.vm_new_guest(name, guest, vcpus=vcpus, memory=parse_size(memory), nested=nested,
                                        config_version=config_version)
        for message in result.warnings:
            warn(message)
        if result.network:
            click.echo(result.network)
        click.echo(f"vm '{result.vm.name}' created (generation {guest.generation})")
        return
    spec = VMSpec(
        name=name, vcpus=vcpus, memory=parse_size(memory), nested=nested, image=image,
        kernel=str(kernel) if kernel else None, initrd=str(initrd) if initrd else None, append=append,
        run_script=str(run_script) if run_script else None, config_version=config_version, switches=switches,
        host=host, maximum=_size(maximum, "maximum"), disk=disk, network=network,
    )
    with ctx.level(at) as level:
        result = level.vm_new(spec)
    for message in result.warnings:
        warn(message)
    if result.placement:
        click.echo(result.placement)
    where = f" on host '{result.vm.host}'" if result.vm.host else ""
    path = f"{at}/{result.vm.name}" if at else result.vm.name
    click.echo(f"vm '{path}' created{where}")


@vm.command("list")
@OUTPUT
@AT
@pass_ctx
def list_(ctx: Ctx, output: str, at: str) -> None:
    """All VMs with their observed state (of this host, or of the level --at names)."""
    with ctx.level(at) as level:
        infos = level.vm_list()
    columns = ["name", "state", "vcpus", "memory", "nested", "image", "pid"]
    if any(info.host for info in infos):
        columns.append("host")  # VMs on libvirt hosts
    rows_out([present.vm(i) for i in infos], output, columns, empty="no VMs")


@vm.command("show")
@click.argument("name")
@OUTPUT
@pass_ctx
def show(ctx: Ctx, name: str, output: str) -> None:
    """One VM in detail (NAME may be a path such as l1/l2)."""
    with ctx.vm(name) as (level, vm_name):
        data = present.vm(level.vm_show(vm_name))
    if output == "json":
        emit_json(data)
        return
    data["hypervisor running inside"] = data.pop("hypervisor_running")
    fields(data)


@vm.command("start")
@click.argument("name")
@pass_ctx
def start(ctx: Ctx, name: str) -> None:
    """Start a VM (QEMU runs detached; NAME may be a path such as l1/l2)."""
    with ctx.vm(name) as (level, vm_name):
        info = level.vm_start(vm_name)
    if info.host:
        click.echo(f"vm '{name}' started on host '{info.host}'")
        return
    click.echo(f"vm '{name}' started (pid {info.pid}, {info.accelerator}, -cpu {info.cpu_model})")


@vm.command("stop")
@click.argument("name")
@click.option("--turn-off", is_flag=True, help="stop at once, like pulling the plug")
@click.option("--timeout", type=numbers.FLOAT, default=30.0, show_default=True,
              help="seconds to wait for the guest before a hard stop")
@pass_ctx
def stop(ctx: Ctx, name: str, turn_off: bool, timeout: float) -> None:
    """Shut a VM down (ACPI power button), or turn it off."""
    with ctx.vm(name) as (level, vm_name):
        result = level.vm_stop(vm_name, turn_off=turn_off, timeout=timeout)
    how = {"turned off after the timeout": f"turned off after {timeout:g} s without a guest shutdown",
           "saved state discarded": "turned off: its saved state is discarded"}.get(result.how.value, result.how.value)
    click.echo(f"vm '{name}' {how}")


@vm.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="turn the VM off first if it runs")
@pass_ctx
def remove(ctx: Ctx, name: str, force: bool) -> None:
    """Delete a VM and its files."""
    with ctx.vm(name) as (level, vm_name):
        level.vm_remove(vm_name, force=force)
    click.echo(f"vm '{name}' removed")


@vm.command("set-processor")
@click.argument("name")
@click.option("--count", type=numbers.INT, default=None, help="number of vCPUs")
@click.option("--expose-virtualization-extensions", "--nested", "nested", type=ON_OFF, default=None)
@click.option("--enlightenments", type=click.Choice(["hyperv", "off"]), default=None,
              help="hyperv: the Hyper-V enlightenments Windows uses (needs KVM); off")
@pass_ctx
def set_processor(ctx: Ctx, name: str, count: int | None, nested: str | None, enlightenments: str | None) -> None:
    """Change vCPUs, nesting or enlightenments (seed: only while the VM is off)."""
    with ctx.vm(name) as (level, vm_name):
        kwargs = {} if enlightenments is None else {"enlightenments": enlightenments}
        result = level.vm_set_processor(vm_name, count=count, nested=None if nested is None else nested == "on",
                                        **kwargs)
    for message in result.warnings:
        warn(message)
    click.echo(f"vm '{name}' processor updated")


@vm.command("set-tpm")
@click.argument("name")
@click.option("--on/--off", "on", default=None, help="a virtual TPM 2.0 (swtpm) from the next start, or none")
@click.option("--delete-state", is_flag=True,
              help="with --off: delete the TPM's state (its keys) too; without it the state is kept for --on")
@pass_ctx
def set_tpm(ctx: Ctx, name: str, on: bool | None, delete_state: bool) -> None:
    """Turn the VM's virtual TPM on or off (Hyper-V's Enable-VMTPM / Disable-VMTPM; only while off)."""
    if on is None:
        raise InvalidInput("give --on or --off", hint=f"nestor vm set-tpm {name} --on")
    with ctx.vm(name) as (level, vm_name):
        level.vm_set_tpm(vm_name, on, delete_state=delete_state)
    if on:
        click.echo(f"vm '{name}': TPM on (from its next start)")
    else:
        click.echo(f"vm '{name}': TPM off" + ("; its state deleted (its checkpoints keep theirs)" if delete_state
                                                else "; its state kept"))


@vm.command("upgrade")
@click.argument("name")
@pass_ctx
def upgrade(ctx: Ctx, name: str) -> None:
    """Raise the VM configuration version to the current one."""
    with ctx.vm(name) as (level, vm_name):
        info = level.vm_upgrade(vm_name)
    click.echo(f"vm '{name}' is at configuration version {info.config_version}")


@vm.command("reset-disk")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask: the VM's disk and all data on it are deleted")
@pass_ctx
def reset_disk(ctx: Ctx, name: str, yes: bool) -> None:
    """Discard an Off VM's disk; its next start begins afresh from the current image."""
    if not yes and not click.confirm(f"delete the disk of vm '{name}' and all data on it?", default=False):
        raise click.exceptions.Abort()
    found = ctx.local.vm_reset_disk(ctx.only_here(name, "reset-disk"))
    click.echo(f"vm '{name}': disk {'discarded; the next start makes a fresh one' if found else 'was not made yet'}")


@vm.command("log")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True)
@click.option("--until", default=None, help="follow until this text appears, then exit 0")
@click.option("--timeout", type=numbers.FLOAT, default=None, help="with --follow/--until: give up after S seconds")
@click.option("--tail", type=numbers.INT, default=None, help="start this many bytes before the end")
@pass_ctx
def log(ctx: Ctx, name: str, follow: bool, until: str | None, timeout: float | None, tail: int | None) -> None:
    """The VM's serial console output (at most the last 2 MiB; the 2 MiB before are in serial.log.1)."""
    with ctx.vm(name, local=True) as (level, vm_name):
        out = GuestOutput(sys.stdout)  # the guest's bytes: escaped on a terminal, exact in a pipe
        for chunk in level.vm_log(vm_name, follow=follow, until=until, timeout=timeout, tail=tail):
            out.write(chunk)
        out.close()


@vm.command("console")
@click.argument("name")
@pass_ctx
def console(ctx: Ctx, name: str) -> None:
    """Attach to the serial console (Ctrl-] detaches)."""
    serial_console.attach(ctx.local.vm_console_socket(ctx.only_here(name, "the console")))


@vm.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=numbers.FLOAT, default=guests.EXEC_TIMEOUT, show_default=True)
@pass_ctx
def exec_(ctx: Ctx, target: str, command: tuple[str, ...], timeout: float) -> None:
    """Run CMD in the guest through its agent; TARGET may be a path like l1/l2.

    Options go before TARGET; everything after it (after an optional `--`) is the guest's
    command, so `nestor vm exec l1 df -h` runs `df -h` in l1."""
    argv = list(command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise InvalidInput("no command given", hint="nestor vm exec [--timeout S] NAME -- CMD [ARG...]")
    result = ctx.service.vm_exec(target, argv, timeout=timeout)
    for stream, data in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
        out = GuestOutput(stream)  # escaped on a terminal, exact in a pipe
        out.write(data, final=True)
    sys.exit(result.code if 0 <= result.code <= 255 else 255)


def _size(text: str | None, what: str) -> int | None:
    return None if text is None else parse_size(text, what)


def _buffer(text: str | None) -> int | None:
    if text is None:
        return None
    raw = text.strip().removesuffix("%").strip()
    if not re.fullmatch(r"[0-9]{1,6}", raw):  # not str.isdigit: it takes '²' and int() does not
        raise InvalidInput(f"invalid memory buffer {shown(text)}", hint="a whole percent from 5 to 2000, e.g. --buffer 20")
    return int(raw)


@vm.command("set-memory")
@click.argument("name")
@click.option("--startup", default=None, help="memory at start (static: the memory), e.g. 512M")
@click.option("--dynamic", type=ON_OFF, default=None, help="let the balancer move memory between minimum and maximum")
@click.option("--minimum", default=None, help="dynamic memory: the least the guest keeps")
@click.option("--maximum", default=None,
              help="dynamic: the most the guest gets; static: the room a running VM can be resized into")
@click.option("--buffer", default=None, help="dynamic memory: percent of the guest's demand kept free (5-2000)")
@pass_ctx
def set_memory(ctx: Ctx, name: str, startup: str | None, dynamic: str | None, minimum: str | None,
               maximum: str | None, buffer: str | None) -> None:
    """Change a VM's memory (seed: Set-VMMemory); a running VM is resized live unless R7 forbids it."""
    change = MemoryChange(
        startup=_size(startup, "startup"), dynamic=None if dynamic is None else dynamic == "on",
        minimum=_size(minimum, "minimum"), maximum=_size(maximum, "maximum"), buffer=_buffer(buffer),
    )
    with ctx.vm(name) as (level, vm_name):
        result = level.vm_set_memory(vm_name, change)
    if result.outcome is MemoryOutcome.RESIZED and result.target is not None:
        click.echo(f"vm '{name}' memory is now {format_size(result.target)}")
    elif result.outcome is MemoryOutcome.RESIZING and result.target is not None and result.actual is not None:
        click.echo(f"vm '{name}' memory set to {format_size(result.target)}; the guest has "
                   f"{result.actual >> 20}M so far and keeps moving toward it")
    else:
        click.echo(f"vm '{name}' memory updated")


@vm.command("save")
@click.argument("name")
@pass_ctx
def save(ctx: Ctx, name: str) -> None:
    """Save a running VM's state to its directory and turn it off; `vm start` resumes it."""
    with ctx.vm(name) as (level, vm_name):
        result = level.vm_save(vm_name)
    if not result.size:  # a VM on a libvirt host: libvirt keeps the state there
        click.echo(f"vm '{name}' saved ({result.path}; nestor vm start {name} resumes it)")
        return
    click.echo(f"vm '{name}' saved ({result.size >> 20} MiB state)")


# VMs on libvirt hosts (issue 12): `vm move` lives in cli/hosts.py.
from .hosts import move  # noqa: E402

vm.add_command(move)

# Disk-image guests: `vm ssh`, `vm disk …`, `vm checkpoint …` (cli/guest_commands.py).
from .guest_commands import register as _register_guest_commands  # noqa: E402

_register_guest_commands(vm)
