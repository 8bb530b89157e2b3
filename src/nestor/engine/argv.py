"""Build a QEMU argv from a frozen LaunchSpec, one small function per device. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..images import contract
from .runas import QemuUser

SANDBOX = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
# With -runas/-run-with user= QEMU itself calls setgid/setuid after seccomp is in force, so set*id
# must be allowed (elevateprivileges=deny kills it with SIGSYS: checked on 7.2). Once QEMU has
# dropped root those calls can only move among its own ids, so nothing is given away.
SANDBOX_RUNAS = "on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"
# Writable images keep the read-write descriptor QEMU opened as root. With -drive's default
# auto-read-only=on, QEMU reopens the file by path (read-only) when it inactivates its images at
# the end of a migration (`vm save`) and again read-write on `cont`: after the drop to the QEMU
# user that open fails (EACCES in the root-only home: "bdrv_inactivate_all() failed"). With it
# off the lock bytes change on the open descriptor and nothing is reopened (checked on 7.2).
KEEP_RW = "auto-read-only=off"


@dataclass(frozen=True)
class Nic:
    mac: str
    tap: str | None = None  # None: QEMU user-mode networking (no host changes)
    fd: int | None = None  # the tap's descriptor nestor opened and passes (QEMU never opens it by name)


@dataclass(frozen=True)
class Disk:
    path: Path
    format: str = "raw"  # "raw" | "qcow2"
    readonly: bool = False
    id: str | None = None  # the drive id (QMP block_resize names it); default disk<index>
    boot: bool = False  # q35: first disk the firmware boots from (bootindex)
    cache: str = "unsafe"  # writable disks: "unsafe" for scratch overlays, "writeback" for real guests
    # qcow2 with pin_backing: the backing comes from here, never from the header (which QEMU may
    # rewrite: an escaped QEMU naming /dev/sda would have it opened as root at the next start).
    # backing None then means "none" (`backing=`).
    backing: Path | None = None
    backing_format: str = "qcow2"
    pin_backing: bool = False
    backing_driver: str = "file"  # "host_device" when the backing is a block device (a nested host's rootfs disk)


@dataclass(frozen=True)
class Cdrom:
    path: Path
    id: str
    boot: bool = False  # installer media: boot it before the disks


@dataclass(frozen=True)
class Firmware:
    """UEFI (OVMF): read-only code, and the VM's own copy of the variable store (NVRAM)."""

    code: Path
    vars: Path
    secure_boot: bool = False


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    vm_dir: Path
    accel: str  # "kvm" | "tcg"
    cpu_model: str
    vcpus: int
    memory: int  # bytes
    kernel: Path | None
    initrd: Path | None = None
    append: str = ""
    disks: tuple[Disk, ...] = ()
    nics: tuple[Nic, ...] = ()
    agent: bool = True
    balloon: bool = True
    sandbox: bool = True
    incoming: bool = False  # restore a saved VM: wait for `migrate-incoming` (nestor passes an fd)
    qemu: str = "qemu-system-x86_64"
    # "microvm": direct kernel boot (appliance, nested-host). "q35": a PC with firmware for disk
    # images: SeaBIOS (generation 1, firmware None) or OVMF (generation 2).
    machine: str = "microvm"
    firmware: Firmware | None = None
    cdroms: tuple[Cdrom, ...] = ()
    user: QemuUser | None = None  # drop root to this user once started (engine/runas.py); None: stay
    cpu_flags: tuple[str, ...] = ()  # added to -cpu: the Hyper-V enlightenments (policy/enlightenments.py)
    tpm_socket: Path | None = None  # swtpm's control socket (engine/swtpm.py): a TPM 2.0 on q35
    extra: tuple[str, ...] = field(default=())


def _machine(spec: LaunchSpec) -> list[str]:
    if spec.machine == "q35":
        # Secure boot: SMM keeps the variable store out of the guest's reach.
        smm = ",smm=on" if spec.firmware is not None and spec.firmware.secure_boot else ""
        return ["-M", f"q35{smm}", "-accel", spec.accel]
    return ["-M", "microvm,x-option-roms=off,rtc=on", "-accel", spec.accel]


def _bus(spec: LaunchSpec) -> str:
    """virtio transport suffix: MMIO on microvm, PCI on q35."""
    return "pci" if spec.machine == "q35" else "device"


def _firmware(spec: LaunchSpec) -> list[str]:
    fw = spec.firmware
    if fw is None:
        return []  # SeaBIOS, QEMU's default, or direct kernel boot on microvm
    secure = ["-global", "driver=cfi.pflash01,property=secure,value=on"] if fw.secure_boot else []
    return [
        *secure,
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={fw.code}",
        "-drive", f"if=pflash,format=raw,unit=1,{KEEP_RW},file={fw.vars}",
    ]


def _cpu(spec: LaunchSpec) -> list[str]:
    model = ",".join((spec.cpu_model, *spec.cpu_flags))
    return ["-cpu", model, "-smp", str(spec.vcpus), "-m", f"{spec.memory >> 20}M"]


def _base(spec: LaunchSpec) -> list[str]:
    return ["-name", spec.name, "-nodefaults", "-no-user-config", "-display", "none"]


def _kernel(spec: LaunchSpec) -> list[str]:
    if spec.kernel is None:
        return []  # the firmware boots a disk or a CD
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
        "-device", f"virtio-serial-{_bus(spec)}",
        "-chardev", f"socket,id=qga0,path={spec.vm_dir / paths.QGA_SOCK},server=on,wait=off",
        "-device", f"virtserialport,chardev=qga0,name={contract.AGENT_PORT}",
        # the guest's own nestor API (service/channel.py): framed HTTP requests, host end a unix socket
        "-chardev", f"socket,id=api0,path={spec.vm_dir / paths.API_SOCK},server=on,wait=off",
        "-device", f"virtserialport,chardev=api0,name={paths.API_PORT}",
    ]


def _balloon(spec: LaunchSpec) -> list[str]:
    return ["-device", f"virtio-balloon-{_bus(spec)},id=balloon0"] if spec.balloon else []


def _disks(spec: LaunchSpec) -> list[str]:
    argv: list[str] = []
    for index, disk in enumerate(spec.disks):
        drive = disk.id or f"disk{index}"
        mode = "readonly=on" if disk.readonly else f"cache={disk.cache},{KEEP_RW}"
        boot = ",bootindex=1" if disk.boot else ""
        node = ""
        if spec.machine == "q35":  # node names: QMP snapshot-save/-load name the disks by node
            boot = f",id={drive}-dev{boot}"
            node = f",node-name=n-{drive}"
        argv += [
            "-drive", f"id={drive},file={disk.path},format={disk.format},if=none,{mode}{node}{_backing(disk)}",
            "-device", f"virtio-blk-{_bus(spec)},drive={drive}{boot}",
        ]
    return argv


def _backing(disk: Disk) -> str:
    """A qcow2's backing as nestor knows it, read-only, with a fixed format and no chain below."""
    if not disk.pin_backing or disk.format != "qcow2":
        return ""
    if disk.backing is None:
        return ",backing="
    below = ",backing.backing=" if disk.backing_format == "qcow2" else ""
    return (f",backing.driver={disk.backing_format},backing.file.driver={disk.backing_driver},"
            f"backing.file.filename={disk.backing},backing.read-only=on{below}")


def _cdroms(spec: LaunchSpec) -> list[str]:
    """CD-ROMs on virtio-scsi: Debian's cloud kernel has no AHCI (q35's own IDE/SATA), while
    SeaBIOS, OVMF and installers all know virtio-scsi."""
    if not spec.cdroms:
        return []
    argv = ["-device", f"virtio-scsi-{_bus(spec)},id=scsi0"]
    for cd in spec.cdroms:
        boot = ",bootindex=0" if cd.boot else ""
        argv += [
            "-drive", f"id={cd.id},file={cd.path},format=raw,if=none,media=cdrom,readonly=on",
            "-device", f"scsi-cd,drive={cd.id},bus=scsi0.0{boot}",
        ]
    return argv


def _nics(spec: LaunchSpec) -> list[str]:
    argv: list[str] = []
    for index, nic in enumerate(spec.nics):
        if nic.tap is None:
            backend = f"user,id=net{index}"
        elif nic.fd is not None:
            backend = f"tap,id=net{index},fd={nic.fd}"
        else:
            backend = f"tap,id=net{index},ifname={nic.tap},script=no,downscript=no"
        argv += ["-netdev", backend, "-device", f"virtio-net-{_bus(spec)},netdev=net{index},mac={nic.mac}"]
    return argv


def _tpm(spec: LaunchSpec) -> list[str]:
    """A TPM 2.0 backed by the VM's swtpm: CRB, the interface Windows 11 and Linux both drive."""
    if spec.tpm_socket is None:
        return []
    return [
        "-chardev", f"socket,id=tpm0,path={spec.tpm_socket}",
        "-tpmdev", "emulator,id=tpm0,chardev=tpm0",
        "-device", "tpm-crb,tpmdev=tpm0",
    ]


def _incoming(spec: LaunchSpec) -> list[str]:
    # `defer`, not `exec:`/`file:`: spawn=deny forbids exec, and QEMU 7.2 has no file: URI.
    return ["-incoming", "defer"] if spec.incoming else []


def _user(spec: LaunchSpec) -> list[str]:
    return spec.user.argv() if spec.user is not None else []


def _sandbox(spec: LaunchSpec) -> list[str]:
    if not spec.sandbox:
        return []
    return ["-sandbox", SANDBOX_RUNAS if spec.user is not None else SANDBOX]


def build(spec: LaunchSpec) -> list[str]:
    """The whole argv; the order is stable so golden files stay readable."""
    return [
        spec.qemu,
        *_base(spec),
        *_machine(spec),
        *_firmware(spec),
        *_cpu(spec),
        *_kernel(spec),
        *_disks(spec),
        *_cdroms(spec),
        *_nics(spec),
        *_agent(spec),
        *_balloon(spec),
        *_tpm(spec),
        *_serial(spec),
        *_control(spec),
        *_incoming(spec),
        *_user(spec),
        *_sandbox(spec),
        *spec.extra,
    ]
