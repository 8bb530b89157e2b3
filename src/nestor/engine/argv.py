"""Build a QEMU argv from a frozen LaunchSpec, one small function per device. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import paths

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"


@dataclass(frozen=True)
class Nic:
    mac: str
    tap: str | None = None  # None: QEMU user-mode networking (no host changes)


@dataclass(frozen=True)
class Disk:
    path: Path
    format: str = "raw"  # "raw" | "qcow2"
    readonly: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    vm_dir: Path
    accel: str  # "kvm" | "tcg"
    cpu_model: str
    vcpus: int
    memory: int  # bytes
    kernel: Path
    initrd: Path | None = None
    append: str = ""
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    agent: bool = True
    balloon: bool = True
    sandbox: bool = True
    incoming: bool = False  # restore a saved VM: wait for `migrate-incoming` (nestor passes an fd)
    qemu: str = "qemu-system-x86_64"
    extra: tuple[str, ...] = field(default=())


def _machine(spec: LaunchSpec) -> list[str]:
    return ["-M", "microvm,x-option-roms=off,rtc=on", "-accel", spec.accel]


def _cpu(spec: LaunchSpec) -> list[str]:
    return ["-cpu", spec.cpu_model, "-smp", str(spec.vcpus), "-m", f"{spec.memory >> 20}M"]


def _base(spec: LaunchSpec) -> list[str]:
    return ["-name", spec.name, "-nodefaults", "-no-user-config", "-display", "none"]


def _kernel(spec: LaunchSpec) -> list[str]:
    argv = ["-kernel", str(spec.kernel)]
    if spec.initrd is not None:
        argv += ["-initrd", str(spec.initrd)]
    if spec.append:
        argv += ["-append", spec.append]
    return argv


def _control(spec: LaunchSpec) -> list[str]:
    d = spec.vm_dir
    return [
        "-qmp", f"unix:{d / paths.QMP_SOCK},server=on,wait=off",
        "-pidfile", str(d / paths.PIDFILE),
    ]


def _serial(spec: LaunchSpec) -> list[str]:
    d = spec.vm_dir
    return [
        "-chardev",
        f"socket,id=ser0,path={d / paths.SERIAL_SOCK},server=on,wait=off,logfile={d / paths.SERIAL_LOG},logappend=on",
        "-serial", "chardev:ser0",
    ]


def _agent(spec: LaunchSpec) -> list[str]:
    if not spec.agent:
        return []
    return [
        "-device", "virtio-serial-device",
        "-chardev", f"socket,id=qga0,path={spec.vm_dir / paths.QGA_SOCK},server=on,wait=off",
        "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
        # the guest's own nestor API (service/channel.py): framed HTTP requests, host end a unix socket
        "-chardev", f"socket,id=api0,path={spec.vm_dir / paths.API_SOCK},server=on,wait=off",
        "-device", f"virtserialport,chardev=api0,name={paths.API_PORT}",
    ]


def _balloon(spec: LaunchSpec) -> list[str]:
    return ["-device", "virtio-balloon-device,id=balloon0"] if spec.balloon else []


def _disks(spec: LaunchSpec) -> list[str]:
    argv: list[str] = []
    for index, disk in enumerate(spec.disks):
        mode = "readonly=on" if disk.readonly else "cache=unsafe"
        argv += [
            "-drive", f"id=disk{index},file={disk.path},format={disk.format},if=none,{mode}",
            "-device", f"virtio-blk-device,drive=disk{index}",
        ]
    return argv


def _nics(spec: LaunchSpec) -> list[str]:
    argv: list[str] = []
    for index, nic in enumerate(spec.nics):
        backend = f"user,id=net{index}" if nic.tap is None else f"tap,id=net{index},ifname={nic.tap},script=no,downscript=no"
        argv += ["-netdev", backend, "-device", f"virtio-net-device,netdev=net{index},mac={nic.mac}"]
    return argv


def _incoming(spec: LaunchSpec) -> list[str]:
    # `defer`, not `exec:`/`file:`: spawn=deny forbids exec, and QEMU 7.2 has no file: URI.
    return ["-incoming", "defer"] if spec.incoming else []


def _sandbox(spec: LaunchSpec) -> list[str]:
    return ["-sandbox", SANDBOX] if spec.sandbox else []


def build(spec: LaunchSpec) -> list[str]:
    """The whole argv; the order is stable so golden files stay readable."""
    return [
        spec.qemu,
        *_base(spec),
        *_machine(spec),
        *_cpu(spec),
        *_kernel(spec),
        *_disks(spec),
        *_nics(spec),
        *_agent(spec),
        *_balloon(spec),
        *_serial(spec),
        *_control(spec),
        *_incoming(spec),
        *_sandbox(spec),
        *spec.extra,
    ]
