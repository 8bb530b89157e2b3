from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from .. import guest
from ..errors import InvalidInput, StateError
from ..model import CURRENT_CONFIG_VERSION, BootSource, parse_size
from . import console as serial_console
from .context import Ctx, pass_ctx
from .guest_options import guest_options, guest_request, is_guest_request
from .output import OUTPUT, emit_json, fields, rows_out, warn

ON_OFF = click.Choice(["on", "off"])


@click.group()
def vm() -> None:
    """Virtual machines."""


@vm.command("new")
@click.argument("name")
@click.option("--vcpus", type=int, default=1, show_default=True)
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
@click.option("--switch", "switches", multiple=True, help="connect an adapter to this switch (repeatable)")
@guest_options
@pass_ctx
def new(ctx: Ctx, /, name: str, vcpus: int, memory: str, image: str | None, kernel: Path | None,
        initrd: Path | None, append: str, run_script: Path | None, nested: bool,
        config_version: str | None, switches: tuple[str, ...], **guest_flags: Any) -> None:
    """Define a new VM (it starts Off)."""
    request = guest_request(image, guest_flags)
    if is_guest_request(image, request):
        if kernel or initrd or run_script or append:
            raise InvalidInput("--kernel/--initrd/--append/--run are for the appliance; a disk-image VM boots its disk",
                               hint="drop them, or drop --image/--iso and the guest flags")
        kwargs = {"config_version": config_version} if config_version else {}
        for switch in switches:
            ctx.service.network.store.switch(switch)
        config, warnings = ctx.service.vm_new_guest(name, vcpus, parse_size(memory), nested,
                                                    kwargs.get("config_version", CURRENT_CONFIG_VERSION), request)
        for message in warnings:
            warn(message)
        try:
            for switch in switches:
                ctx.service.network.adapter_add(config.name, switch)
        except BaseException:
            ctx.service.vm_remove(config.name)
            raise
        click.echo(f"vm '{config.name}' created (generation {request.generation})")
        return
    if kernel and image:
        raise InvalidInput("--image and --kernel exclude each other", hint="give one of them")
    if initrd and not kernel:
        raise InvalidInput("--initrd needs --kernel", hint="add --kernel FILE")
    boot = BootSource(
        image=None if kernel else (image or "appliance"),
        kernel=str(kernel) if kernel else None,
        initrd=str(initrd) if initrd else None,
        append=append,
        run_script=str(run_script) if run_script else None,
    )
    for switch in switches:
        ctx.service.network.store.switch(switch)  # an unknown switch fails before the VM exists
    kwargs = {"config_version": config_version} if config_version else {}
    config, warnings = ctx.service.vm_new(name, vcpus=vcpus, memory=parse_size(memory), nested=nested,
                                          boot=boot, **kwargs)
    for message in warnings:
        warn(message)
    try:
        for switch in switches:
            ctx.service.network.adapter_add(config.name, switch)
    except BaseException:
        ctx.service.vm_remove(config.name)
        raise
    click.echo(f"vm '{config.name}' created")


@vm.command("list")
@OUTPUT
@pass_ctx
def list_(ctx: Ctx, output: str) -> None:
    """All VMs with their observed state."""
    infos = ctx.service.vm_list()
    rows_out([i.to_json() for i in infos], output, ["name", "state", "vcpus", "memory", "nested", "image", "pid"],
             empty="no VMs")


@vm.command("show")
@click.argument("name")
@OUTPUT
@pass_ctx
def show(ctx: Ctx, name: str, output: str) -> None:
    """One VM in detail."""
    info = ctx.service.vm_show(name)
    data = info.to_json()
    if output == "json":
        emit_json(data)
        return
    data["hypervisor running inside"] = data.pop("hypervisor_running")
    fields(data)


@vm.command("start")
@click.argument("name")
@pass_ctx
def start(ctx: Ctx, name: str) -> None:
    """Start a VM (QEMU runs detached)."""
    info = ctx.service.vm_start(name)
    click.echo(f"vm '{name}' started (pid {info.pid}, {info.accelerator}, -cpu {info.cpu_model})")


@vm.command("stop")
@click.argument("name")
@click.option("--turn-off", is_flag=True, help="stop at once, like pulling the plug")
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="seconds to wait for the guest before a hard stop")
@pass_ctx
def stop(ctx: Ctx, name: str, turn_off: bool, timeout: float) -> None:
    """Shut a VM down (ACPI power button), or turn it off."""
    how = ctx.service.vm_stop(name, turn_off=turn_off, timeout=timeout)
    click.echo(f"vm '{name}' {how}")


@vm.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="turn the VM off first if it runs")
@pass_ctx
def remove(ctx: Ctx, name: str, force: bool) -> None:
    """Delete a VM and its files."""
    ctx.service.vm_remove(name, force=force)
    click.echo(f"vm '{name}' removed")


@vm.command("set-processor")
@click.argument("name")
@click.option("--count", type=int, default=None, help="number of vCPUs")
@click.option("--expose-virtualization-extensions", "--nested", "nested", type=ON_OFF, default=None)
@pass_ctx
def set_processor(ctx: Ctx, name: str, count: int | None, nested: str | None) -> None:
    """Change vCPUs or nesting (seed: only while the VM is off)."""
    if count is None and nested is None:
        raise InvalidInput("nothing to change", hint="give --count N or --expose-virtualization-extensions on|off")
    warnings = ctx.service.vm_set_processor(name, count=count, nested=None if nested is None else nested == "on")
    for message in warnings:
        warn(message)
    click.echo(f"vm '{name}' processor updated")


@vm.command("upgrade")
@click.argument("name")
@pass_ctx
def upgrade(ctx: Ctx, name: str) -> None:
    """Raise the VM configuration version to the current one."""
    version = ctx.service.vm_upgrade(name)
    click.echo(f"vm '{name}' is at configuration version {version}")


@vm.command("log")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True)
@click.option("--until", default=None, help="follow until this text appears, then exit 0")
@click.option("--timeout", type=float, default=None, help="with --follow/--until: give up after S seconds")
@pass_ctx
def log(ctx: Ctx, name: str, follow: bool, until: str | None, timeout: float | None) -> None:
    """The VM's serial console output."""
    path = ctx.service.vm_paths(name).serial_log
    follow = follow or until is not None
    deadline = time.monotonic() + timeout if timeout else None
    seen = ""
    while not path.exists():
        if not follow:
            return
        _tick(deadline, until, name)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                text = chunk.decode(errors="replace")
                click.echo(text, nl=False)
                if until is not None:
                    seen = (seen + text)[-(len(until) + 65536):]
                    if until in seen:
                        return
                continue
            if not follow:
                return
            _tick(deadline, until, name)


def _tick(deadline: float | None, until: str | None, name: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        what = f"'{until}'" if until else "more output"
        raise StateError(f"vm '{name}': no {what} on the console in time", hint="nestor vm log NAME shows what it printed")
    time.sleep(0.1)


@vm.command("console")
@click.argument("name")
@pass_ctx
def console(ctx: Ctx, name: str) -> None:
    """Attach to the serial console (Ctrl-] detaches)."""
    files = ctx.service.vm_paths(name)
    if not files.serial_sock.exists():
        raise StateError(f"vm '{name}' is not running", hint=f"nestor vm start {name}")
    serial_console.attach(files.serial_sock)


@vm.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=float, default=guest.EXEC_TIMEOUT, show_default=True)
@pass_ctx
def exec_(ctx: Ctx, target: str, command: tuple[str, ...], timeout: float) -> None:
    """Run CMD in the guest through its agent; TARGET may be a path like l1/l2."""
    code, out, err = guest.vm_exec(ctx.service, target, list(command), timeout=timeout)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.stderr.buffer.write(err)
    sys.stderr.flush()
    sys.exit(code)


def _size(text: str | None, what: str) -> int | None:
    return None if text is None else parse_size(text, what)


def _buffer(text: str | None) -> int | None:
    if text is None:
        return None
    raw = text.strip().removesuffix("%").strip()
    if not raw.isdigit():
        raise InvalidInput(f"invalid memory buffer '{text}'", hint="a whole percent from 5 to 2000, e.g. --buffer 20")
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
    from .. import memory

    message = memory.set_memory(
        ctx.service, name,
        startup=_size(startup, "startup"), dynamic=None if dynamic is None else dynamic == "on",
        minimum=_size(minimum, "minimum"), maximum=_size(maximum, "maximum"), buffer=_buffer(buffer),
    )
    click.echo(message)


@vm.command("save")
@click.argument("name")
@pass_ctx
def save(ctx: Ctx, name: str) -> None:
    """Save a running VM's state to its directory and turn it off; `vm start` resumes it."""
    from .. import memory

    path = memory.save(ctx.service, name)
    click.echo(f"vm '{name}' saved ({path.stat().st_size >> 20} MiB state)")


# Disk-image guests: `vm ssh`, `vm disk …`, `vm checkpoint …` (nestor/cli/guest_commands.py).
from .guest_commands import register as _register_guest_commands  # noqa: E402

_register_guest_commands(vm)
