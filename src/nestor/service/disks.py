"""A disk-image VM's disks: the root overlay on its image, and data disks (``vm disk …``).

Every disk is a qcow2 file in the VM's directory. The root disk of a VM made from an image is a
copy-on-write overlay whose backing file is the stored image (read-only, never written): many
VMs share one image. ``--disk-size`` grows the overlay at creation; cloud-init's growpart then
grows the root partition and filesystem at first boot.

Resizing a running VM's disk goes through QMP ``block_resize`` (the guest's virtio-blk sees the
new capacity at once); a stopped VM's through ``qemu-img resize``. Disks only grow: shrinking
a disk under a filesystem destroys data, and Hyper-V's Resize-VHD refuses it too.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import files, paths
from ..engine import process
from ..engine import qemu_img as qemu_img_tool
from ..engine.qmp import Monitor
from ..errors import Conflict, InvalidInput, NotFound, StateError, error_context
from ..images import qcow2, store
from ..model import VMConfig, format_size, validate_name
from ..state.lock import vm_lock
from .guest_types import DiskInfo, DiskResize

if TYPE_CHECKING:
    from .core import Core

ROOT = "root"
MAX_DISK = 16 << 40
MAX_DISKS = 8
_TIMEOUT = 120


@dataclass(frozen=True)
class DiskRow:
    id: int
    vm_id: int
    name: str
    file: Path

    @property
    def drive_id(self) -> str:
        """The QEMU drive id (QMP block_resize and snapshot-save name it)."""
        return f"disk-{self.name}"


class DiskRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, vm_id: int, name: str, file: Path) -> DiskRow:
        try:
            self.conn.execute("INSERT INTO vm_disks (vm_id, name, file) VALUES (?,?,?)", (vm_id, name, str(file)))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"the vm already has a disk '{name}'", hint="choose another --name") from exc
        return self.get(vm_id, name)

    def of_vm(self, vm_id: int) -> list[DiskRow]:
        rows = self.conn.execute("SELECT * FROM vm_disks WHERE vm_id = ? ORDER BY id", (vm_id,))
        return [DiskRow(r["id"], r["vm_id"], r["name"], Path(r["file"])) for r in rows]

    def get(self, vm_id: int, name: str) -> DiskRow:
        for disk in self.of_vm(vm_id):
            if disk.name == name:
                return disk
        raise NotFound(f"disk '{name}' not found", hint="nestor vm disk list VM shows the disks")

    def remove(self, disk_id: int) -> None:
        self.conn.execute("DELETE FROM vm_disks WHERE id = ?", (disk_id,))


def backing_of(core: Core, config: VMConfig, disk: DiskRow) -> Path | None:
    """The one backing file a disk may have: the stored image under the root overlay of a VM made
    from an image (as create_overlay wrote it), none for data disks and blank roots."""
    if disk.name != ROOT or not config.boot.image:
        return None
    return (store.store_dir(core.home.images) / config.boot.image / store.DISK).resolve()


def checked(core: Core, config: VMConfig, rows: list[DiskRow]) -> list[DiskRow]:
    """The disks, each header read and found as nestor wrote it (images/qcow2.py), before root
    opens them by path again (qemu-img, or QEMU at the next start)."""
    for disk in rows:
        qcow2.check(disk.file, backing_of(core, config, disk), f"vm '{config.name}' disk '{disk.name}'")
    return rows


def validate_disk_name(name: str) -> str:
    validate_name(name, "disk")
    return name


def check_size(size: int, what: str = "disk") -> int:
    if size > MAX_DISK:
        raise InvalidInput(f"{what} size {format_size(size)} is too large (at most 16T)", hint="e.g. 20G")
    if size < (1 << 20):
        raise InvalidInput(f"{what} size must be at least 1M", hint="e.g. 20G")
    return size


def qemu_img(argv: list[str], what: str) -> str:
    return qemu_img_tool.run(argv, what, timeout=_TIMEOUT,
                             hint="nestor vm show VM; is the disk in use by another program?")


def info(path: Path) -> dict[str, Any]:
    """qemu-img info of a VM disk, also while QEMU has it open (-U: shared, read-only look)."""
    import json

    data: dict[str, Any] = json.loads(qemu_img(["info", "-U", "--output=json", str(path)], f"qemu-img info {path.name}"))
    return data


def create_overlay(image: store.StoredImage, target: Path, size: int | None) -> None:
    """The root disk: a qcow2 overlay on the image, grown to ``size`` if given (never shrunk)."""
    virtual = int(store.qemu_img_info(image.path, "qcow2")["virtual-size"])
    if size is not None and size < virtual:
        raise InvalidInput(f"--disk-size {format_size(size)} is smaller than the image ({format_size(virtual)})",
                           hint=f"give at least {format_size(virtual)}, or leave --disk-size out")
    argv = ["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image.path.resolve()), str(target)]
    if size is not None:
        argv.append(str(size))
    qemu_img(argv, "cannot create the VM's disk")
    files.tighten(target)  # qemu-img creates by the umask: the disk is root's alone (0600)


def create_blank(target: Path, size: int) -> None:
    qemu_img(["create", "-q", "-f", "qcow2", str(target), str(check_size(size))], "cannot create the disk")
    files.tighten(target)


def resize_offline(path: Path, size: int) -> None:
    qemu_img(["resize", "-q", "-f", "qcow2", str(path), str(size)], "cannot resize the disk")


def check_grow(name: str, current: int, size: int) -> None:
    check_size(size)
    if size < current:
        raise InvalidInput(f"disk '{name}' is {format_size(current)}; disks only grow, not shrink to {format_size(size)}",
                           hint=f"give more than {format_size(current)}")
    if size == current:
        raise InvalidInput(f"disk '{name}' is already {format_size(current)}", hint="give a larger size")


def row(disk: DiskRow, data: dict[str, Any]) -> DiskInfo:
    backing = data.get("full-backing-filename") or data.get("backing-filename")
    return DiskInfo(name=disk.name, virtual_size=int(data.get("virtual-size", 0)),
                    allocated=int(data.get("actual-size", 0)),
                    image=Path(backing).parent.name if backing else None, file=str(disk.file))


# --------------------------------------------------------------------------------------------
# Use cases (`vm disk …`), called through the service
# --------------------------------------------------------------------------------------------


def _guest_vm(core: Core, vm: str) -> tuple[VMConfig, Path, DiskRepo]:
    config = core.vms.get(validate_name(vm))
    repo = DiskRepo(core.conn)
    if not repo.of_vm(config.id):
        raise InvalidInput(f"vm '{vm}' has no qcow2 disks: `vm disk` is for disk-image VMs",
                           hint="make the VM from an image: nestor vm new NAME --image IMAGE")
    checked(core, config, repo.of_vm(config.id))
    return config, core.vm_dir(config), repo


def add(core: Core, vm: str, name: str, size: int) -> DiskInfo:
    validate_disk_name(name)
    check_size(size)
    config, vm_dir, repo = _guest_vm(core, vm)
    with error_context(vm=vm), vm_lock(core.files(config).lock, vm):
        if process.live_pid(vm_dir) is not None:
            raise StateError(f"vm '{vm}' is running: disks are added while it is off",
                             hint=f"nestor vm stop {vm}; a disk added then is there at the next start")
        existing = repo.of_vm(config.id)
        if any(d.name == name for d in existing):
            raise Conflict(f"vm '{vm}' already has a disk '{name}'", hint="choose another --name")
        if len(existing) >= MAX_DISKS:
            raise InvalidInput(f"vm '{vm}' has {len(existing)} disks, the most nestor gives a VM", hint="remove one")
        target = vm_dir / f"disk-{name}.qcow2"
        create_blank(target, size)
        try:
            disk = repo.add(config.id, name, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return row(disk, info(disk.file))


def listing(core: Core, vm: str) -> list[DiskInfo]:
    config, _, repo = _guest_vm(core, vm)
    return [row(d, info(d.file)) for d in repo.of_vm(config.id)]


def resize(core: Core, vm: str, name: str, size: int) -> DiskResize:
    config, vm_dir, repo = _guest_vm(core, vm)
    disk = repo.get(config.id, name)
    with error_context(vm=vm), vm_lock(core.files(config).lock, vm):
        checked(core, config, [disk])  # again under the lock, right before qemu-img opens it
        current = int(info(disk.file)["virtual-size"])
        check_grow(name, current, size)
        if process.live_pid(vm_dir) is None:
            resize_offline(disk.file, size)
            online = False
        else:
            with Monitor(vm_dir / paths.QMP_SOCK, vm) as mon:
                mon.execute("block_resize", {"device": disk.drive_id, "size": size})
            online = True
    return DiskResize(row(disk, info(disk.file)), online)


def remove(core: Core, vm: str, name: str) -> None:
    config, vm_dir, repo = _guest_vm(core, vm)
    disk = repo.get(config.id, name)
    if disk.name == ROOT:
        raise InvalidInput(f"disk '{ROOT}' is the VM's boot disk", hint=f"nestor vm remove {vm} removes the VM")
    with error_context(vm=vm), vm_lock(core.files(config).lock, vm):
        if process.live_pid(vm_dir) is not None:
            raise StateError(f"vm '{vm}' is running: disks are removed while it is off", hint=f"nestor vm stop {vm}")
        repo.remove(disk.id)
        disk.file.unlink(missing_ok=True)
