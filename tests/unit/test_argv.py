"""The QEMU argv builder against golden files (regenerate with NESTOR_REGOLD=1)."""

import os
from pathlib import Path

import pytest

from nestor.engine.argv import Cdrom, Disk, Firmware, LaunchSpec, Nic, build

GOLDEN = Path(__file__).parent / "golden"


def spec(**kw: object) -> LaunchSpec:
    base: dict[str, object] = dict(
        name="web1", vm_dir=Path("/h/vms/1"), accel="tcg", cpu_model="max,svm=off", vcpus=2,
        memory=512 << 20, kernel=Path("/h/images/kernel/vmlinux"), initrd=Path("/h/images/appliance/initrd.img"),
        append="console=ttyS0 tsc_early_khz=2600000",
    )
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


CASES = {
    "tcg_plain": spec(),
    "tcg_nested_disk_nics": spec(cpu_model="max",
                                 disks=(Disk(Path("/h/vms/1/disk.qcow2"), "qcow2"),
                                        Disk(Path("/h/images/payload/x.img"), readonly=True)),
                                 nics=(Nic(mac="52:54:00:12:34:56", tap="nt1a0"), Nic(mac="52:54:00:00:00:01"))),
    "kvm_nested_no_agent": spec(accel="kvm", cpu_model="host", agent=False, balloon=False, initrd=None, append=""),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_argv_golden(case: str) -> None:
    text = "\n".join(build(CASES[case])) + "\n"
    golden = GOLDEN / f"argv_{case}.txt"
    if os.environ.get("NESTOR_REGOLD"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_sandbox_is_on_by_default() -> None:
    argv = build(spec())
    assert argv[argv.index("-sandbox") + 1].startswith("on,")
    assert "spawn=deny" in argv[argv.index("-sandbox") + 1]


def test_user_text_never_reaches_a_shell() -> None:
    argv = build(spec(append="a; rm -rf / $(x)"))
    assert "a; rm -rf / $(x)" in argv[argv.index("-append") + 1]


# Disk-image guests: q35 with SeaBIOS (generation 1) or OVMF (generation 2), virtio on PCI.
Q35 = dict(kernel=None, initrd=None, append="", machine="q35",
           disks=(Disk(Path("/h/vms/1/root.qcow2"), "qcow2", id="disk-root", boot=True, cache="writeback"),
                  Disk(Path("/h/vms/1/disk-data.qcow2"), "qcow2", id="disk-data", cache="writeback")),
           cdroms=(Cdrom(Path("/h/vms/1/seed.iso"), "cd-seed"),),
           nics=(Nic(mac="52:54:00:12:34:56", tap="nt1a0"),))
Q35_CASES = {
    "q35_gen1": spec(**Q35),
    "q35_gen2": spec(**Q35, firmware=Firmware(Path("/usr/share/OVMF/OVMF_CODE_4M.fd"), Path("/h/vms/1/nvram.fd"))),
    "q35_gen2_secure_iso": spec(**{**Q35, "cdroms": (Cdrom(Path("/isos/debian.iso"), "cd-install", boot=True),)},
                                firmware=Firmware(Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
                                                  Path("/h/vms/1/nvram.fd"), secure_boot=True)),
}


@pytest.mark.parametrize("case", sorted(Q35_CASES))
def test_q35_argv_golden(case: str) -> None:
    text = "\n".join(build(Q35_CASES[case])) + "\n"
    golden = GOLDEN / f"argv_{case}.txt"
    if os.environ.get("NESTOR_REGOLD"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_q35_passes_nothing_microvm_specific() -> None:
    argv = build(Q35_CASES["q35_gen1"])
    joined = " ".join(argv)
    assert "microvm" not in joined and "-device virtio-blk-device" not in joined
    assert "-kernel" not in argv and "-append" not in argv and "tsc_early_khz" not in joined
    assert "virtio-serial-pci" in argv and "virtio-balloon-pci,id=balloon0" in argv
    assert argv[argv.index("-cpu") + 1] == "max,svm=off"  # the seed's processor rule, unchanged


def test_q35_boot_order_cdrom_first() -> None:
    argv = build(Q35_CASES["q35_gen2_secure_iso"])
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert any(d.startswith("scsi-cd,drive=cd-install") and d.endswith("bootindex=0") for d in devices)
    assert any(d.startswith("virtio-blk-pci,drive=disk-root") and d.endswith("bootindex=1") for d in devices)
    assert "q35,smm=on" in argv
