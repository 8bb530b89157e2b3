"""The QEMU argv builder against golden files (regenerate with NESTOR_REGOLD=1)."""

import os
from pathlib import Path

import pytest

from nestor.engine.argv import Disk, LaunchSpec, Nic, build

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
