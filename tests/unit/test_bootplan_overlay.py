"""The nested host's disks (bootplan.nested_host_plan): an overlay of this level's pristine
rootfs, the payload and the rootfs itself read-only, for the guest's own nested hosts. Real
qemu-img on small files; no QEMU is started."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nestor import bootplan
from nestor.engine.argv import Disk, _backing
from nestor.images import contract, qcow2

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img not installed")


def plan(tmp_path: Path, rootfs: Path) -> bootplan.BootPlan:
    payload = tmp_path / "payload.img"
    payload.write_bytes(b"\0" * 4096)
    vm_dir = tmp_path / "vm"
    vm_dir.mkdir(exist_ok=True)
    return bootplan.nested_host_plan(rootfs, payload, vm_dir, "l1", ["console=ttyS0"], tmp_path / "vmlinux", None)


def test_disks_are_overlay_payload_and_pristine_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs-abc.img"
    rootfs.write_bytes(b"\0" * (1 << 20))
    made = plan(tmp_path, rootfs)
    overlay, payload, pristine = made.disks
    assert overlay.format == "qcow2" and overlay.pin_backing and overlay.backing == rootfs.resolve()
    assert overlay.backing_format == "raw" and overlay.backing_driver == "file"
    assert qcow2.read(overlay.path).backing == str(rootfs.resolve())  # copy-on-write: nothing copied
    assert overlay.path.stat().st_size < 1 << 20
    assert payload == Disk(tmp_path / "payload.img", readonly=True)
    assert pristine == Disk(rootfs.resolve(), readonly=True)  # vdc: the guest's own nested-host image
    assert contract.GUEST_ROOTFS_DISK == "/dev/vdc"  # the third disk on the command line
    assert made.agent


def test_second_start_keeps_the_overlay(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs-abc.img"
    rootfs.write_bytes(b"\0" * (1 << 20))
    first = plan(tmp_path, rootfs).disks[0].path
    inode = first.stat().st_ino
    assert plan(tmp_path, rootfs).disks[0].path.stat().st_ino == inode


def test_block_device_backing_uses_host_device() -> None:
    disk = Disk(Path("/vm/disk.qcow2"), "qcow2", backing=Path("/dev/vdc"), backing_format="raw", pin_backing=True,
                backing_driver="host_device")
    assert "backing.file.driver=host_device,backing.file.filename=/dev/vdc" in _backing(disk)
    file_disk = Disk(Path("/vm/disk.qcow2"), "qcow2", backing=Path("/img/r.img"), backing_format="raw",
                     pin_backing=True)
    assert "backing.file.driver=file," in _backing(file_disk)


def test_identity_of_a_file_tracks_its_changes(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs-abc.img"
    rootfs.write_bytes(b"\0" * 4096)
    first = bootplan.base_identity(rootfs)
    assert first.startswith(str(rootfs.resolve()))
    rootfs.write_bytes(b"\0" * 8192)
    assert bootplan.base_identity(rootfs) != first
