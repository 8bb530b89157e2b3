from pathlib import Path

from nestor.engine.qmp import hypervisor_bits
from nestor.host.facts import parse_cpuinfo, parse_level, parse_meminfo

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu MHz\t\t: 2596.142
flags\t\t: fpu svm npt lm
processor\t: 1
vendor_id\t: AuthenticAMD
cpu MHz\t\t: 2000.000
flags\t\t: fpu
"""


def test_parse_cpuinfo() -> None:
    vendor, flags, khz = parse_cpuinfo(CPUINFO)
    assert vendor == "amd" and {"svm", "npt"} <= flags and khz == 2596142


def test_parse_meminfo() -> None:
    assert parse_meminfo("MemTotal:       24576000 kB\nMemFree: 1 kB\n") == 24576000 * 1024


def test_hypervisor_bits_from_info_registers() -> None:
    regs = ("CPU#0\nEFER=0000000000001d01\nCR0=80050033 CR2=0 CR3=0 CR4=00350ef0\n"
            "CPU#1\nEFER=0000000000000d01\nCR0=80050033 CR2=0 CR3=0 CR4=00350ef0\n")
    assert hypervisor_bits(regs) == [True, False]
    assert hypervisor_bits("EFER=0 CR4=00002000") == [True]  # VMXE
    assert hypervisor_bits("EFER=0 CR4=0") == [False]


def test_probe_on_this_machine_is_consistent(tmp_path: Path) -> None:
    from nestor.host.facts import probe

    facts = probe()
    assert facts.kvm_kind in ("hardware", "pvm", "absent")
    assert (facts.kvm_kind == "absent") or facts.kvm_device


def test_parse_level() -> None:
    assert parse_level("console=ttyS0 nestor.level=2 quiet") == 2
    assert parse_level("nestor.level=1") == 1
    assert parse_level("console=ttyS0 xnestor.level=3") == 0


def test_qemu_probes_wait_longer_inside_a_guest() -> None:
    """Inside a nestor guest QEMU's start is emulated (under nested TCG below l1): seen ~100 s."""
    from nestor.host import facts as host_facts

    assert host_facts.probe_timeout(0) == host_facts.PROBE_TIMEOUT
    assert host_facts.probe_timeout(1) == host_facts.probe_timeout(3) == 120.0
