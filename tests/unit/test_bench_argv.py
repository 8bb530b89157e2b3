"""bench/common.py: nestor's QEMU argv moved onto a copy of the VM's files for the raw runs."""

import sys
from pathlib import Path

from nestor.engine.argv import Cdrom, Disk, LaunchSpec, Nic, build
from nestor.engine.runas import QemuUser

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from common import drive_files, qemu_user, relocate_argv, tap_fds, tap_names

VM = Path("/h/vms/1")
RAW = Path("/h/raw/b")
QEMU_USER = QemuUser("nestor-qemu", 990, 990)


def gen1(user: QemuUser | None = QEMU_USER) -> list[str]:
    return build(LaunchSpec(
        name="b", vm_dir=VM, accel="tcg", cpu_model="max,svm=off", vcpus=1, memory=1 << 30, kernel=None,
        machine="q35", user=user,
        disks=(Disk(VM / "root.qcow2", "qcow2", id="disk-root", boot=True, cache="writeback"),
               Disk(VM / "disk-data.qcow2", "qcow2", id="disk-data", cache="writeback"),
               Disk(Path("/h/images/store/x/disk.qcow2"), "qcow2", readonly=True, id="disk-ro")),
        cdroms=(Cdrom(VM / "seed.iso", "cidata"),),
        nics=(Nic(mac="52:54:00:12:34:56", tap="nt1a0"), Nic(mac="52:54:00:00:00:01", tap="nt1a1")),
    ))


def test_relocate_moves_every_path_of_the_vm_and_nothing_else() -> None:
    argv = gen1()
    moved = relocate_argv(argv, VM, RAW)
    assert len(moved) == len(argv)
    assert not any(f"{VM}/" in arg for arg in moved)
    changed = [(a, b) for a, b in zip(argv, moved, strict=True) if a != b]
    assert changed and all(b == a.replace(f"{VM}/", f"{RAW}/") for a, b in changed)
    for name in ("qmp.sock", "serial.log", "root.qcow2", "disk-data.qcow2", "seed.iso"):
        assert any(f"{RAW}/{name}" in arg for arg in moved), name
    assert any("/h/images/store/x/disk.qcow2" in arg for arg in moved)  # the shared store stays


def test_relocate_leaves_a_sibling_directory_alone() -> None:
    argv = ["-drive", "file=/h/vms/10/root.qcow2", "-drive", "file=/h/vms/1/root.qcow2"]
    assert relocate_argv(argv, VM, RAW) == ["-drive", "file=/h/vms/10/root.qcow2", "-drive", f"file={RAW}/root.qcow2"]


def test_drive_files_are_the_vms_own_disks_and_seed() -> None:
    assert drive_files(gen1(), VM) == [VM / "root.qcow2", VM / "disk-data.qcow2", VM / "seed.iso"]
    assert drive_files(["-drive", "file=/h/vms/10/root.qcow2"], VM) == []


def test_qemu_user_and_taps() -> None:
    assert qemu_user(gen1()) == "nestor-qemu"
    assert qemu_user(gen1(user=None)) is None
    assert qemu_user(["-run-with", "user=q,chroot=/x"]) == "q"
    assert tap_names(gen1()) == ["nt1a0", "nt1a1"]
    assert tap_names(["-netdev", "user,id=net0"]) == []
    assert tap_fds(["-netdev", "tap,id=net0,fd=5", "-netdev", "user,id=net1", "-netdev", "tap,id=net2,fd=9"]) == [5, 9]
