"""The seed's rules as pure functions: accelerator choice, R2, R3/R4, R6."""

from dataclasses import replace

import pytest

from nestor.errors import Conflict, InvalidInput, PolicyError, StateError
from nestor.host.facts import HostFacts
from nestor.model import VMState
from nestor.policy import accel as accel_policy
from nestor.policy import processor as rules
from nestor.policy.checks import host_checks

PVM = HostFacts(cpu_vendor="intel", cpu_flags=frozenset({"hypervisor", "sse2"}), kvm_device=True,
                kvm_kind="pvm", kvm_module="kvm_pvm", kvm_nested=None, kvm_max_vcpus=None,
                qemu_path="/usr/bin/qemu-system-x86_64", qemu_version="7.2.22", mem_total=24 << 30,
                tsc_khz=2600000, cpus=2)
AMD_KVM = replace(PVM, cpu_vendor="amd", cpu_flags=frozenset({"svm", "npt"}), kvm_kind="hardware",
                  kvm_module="kvm_amd", kvm_nested=True, kvm_max_vcpus=1024)
INTEL_NO_NESTED = replace(PVM, cpu_flags=frozenset({"vmx", "ept"}), kvm_kind="hardware",
                          kvm_module="kvm_intel", kvm_nested=False, kvm_max_vcpus=710)


def test_pvm_host_uses_tcg_with_emulated_amd_v() -> None:
    acc = accel_policy.choose(PVM)
    assert acc.name == "tcg" and "PVM" in acc.reason
    assert acc.nesting_available and acc.vendor_flag == "svm"
    assert acc.cpu_model(True) == "max" and acc.cpu_model(False) == "max,svm=off"


def test_hardware_kvm() -> None:
    acc = accel_policy.choose(AMD_KVM)
    assert acc.name == "kvm" and acc.nesting_available and acc.max_vcpus == 1024
    assert acc.cpu_model(True) == "host" and "-svm" in acc.cpu_model(False)
    intel = accel_policy.choose(INTEL_NO_NESTED)
    assert intel.name == "kvm" and not intel.nesting_available and intel.vendor_flag == "vmx"


def test_host_check_on_pvm_names_tcg_and_nesting() -> None:
    checks = {c.name: c for c in host_checks(PVM)}
    assert checks["accelerator"].detail.startswith("tcg") and "PVM" in checks["accelerator"].detail
    assert not checks["/dev/kvm"].ok and "PVM" in checks["/dev/kvm"].detail
    assert checks["nested virtualization"].ok and "AMD-V" in checks["nested virtualization"].detail
    assert all(c.fix for c in checks.values() if not c.ok)


def test_host_check_nested_param_off_has_fix() -> None:
    checks = {c.name: c for c in host_checks(INTEL_NO_NESTED)}
    assert not checks["kvm_intel nested"].ok
    assert "nested=1" in checks["kvm_intel nested"].fix
    assert not checks["nested virtualization"].ok


@pytest.mark.parametrize("state", [VMState.RUNNING, VMState.PAUSED])
def test_r2_nesting_changes_only_while_off(state: VMState) -> None:
    with pytest.raises(PolicyError, match="stop it first .nested virtualization can only be changed while the VM is off"):
        rules.check_offline_change("x", state, "nested virtualization")
    rules.check_offline_change("x", VMState.OFF, "nested virtualization")


def test_r3_config_version() -> None:
    tcg = accel_policy.choose(PVM)
    with pytest.raises(StateError, match="needs version 10.0"):
        rules.check_nesting_version("x", "9.0", tcg)
    rules.check_nesting_version("x", "10.0", tcg)
    intel = accel_policy.choose(INTEL_NO_NESTED)
    rules.check_nesting_version("x", "8.0", intel)
    with pytest.raises(StateError, match="needs version 8.0") as info:
        rules.check_nesting_version("x", "7.0", intel)
    assert info.value.hint == "nestor vm upgrade x"


def test_r6_vcpus() -> None:
    tcg = accel_policy.choose(PVM)
    assert rules.check_vcpus(2, True, tcg) == []
    assert rules.check_vcpus(226, False, tcg) == []
    (warning,) = rules.check_vcpus(226, True, tcg)
    assert "225" in warning
    for bad in (0, -1):
        with pytest.raises(InvalidInput):
            rules.check_vcpus(bad, False, tcg)
    for over in (289, 10**9):  # above what this host's accelerator allows: a conflict (409), not bad input
        with pytest.raises(Conflict, match="allows"):
            rules.check_vcpus(over, False, tcg)


def test_memory_cap() -> None:
    from nestor.policy import memory as memory_rules

    memory_rules.check_size(1 << 30, "startup", 2 << 30)
    with pytest.raises(Conflict, match="more than the host has"):  # 409: this host's limit (docs/decisions.md)
        memory_rules.check_size(3 << 30, "startup", 2 << 30)
    for tiny in (1, 1 << 10, 1000 << 10, 31 << 20):  # `vm new --memory 1`, 1K, 1000K: too small, with the reason
        with pytest.raises(InvalidInput, match="too small"):
            memory_rules.check_size(tiny, "startup", 2 << 30, option="--memory")
    with pytest.raises(InvalidInput, match="whole number of MiB"):
        memory_rules.check_size((64 << 20) + 1, "startup", 2 << 30)


def test_nestor_guest_without_extensions_offers_no_nesting() -> None:
    inner = replace(PVM, kvm_kind="absent", kvm_module=None, level=1)
    acc = accel_policy.choose(inner)
    assert acc.name == "tcg" and not acc.nesting_available and "L1" in acc.nesting_reason
    check = {c.name: c for c in host_checks(inner)}["nested virtualization"]
    assert not check.ok and "set-processor" in check.fix
