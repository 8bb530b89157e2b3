"""Hyper-V enlightenments: the flags per host, the TCG refusal, and the argv they make."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor.engine import argv
from nestor.errors import InvalidInput, StateError
from nestor.host.facts import HostFacts
from nestor.policy import accel as accel_policy
from nestor.policy import enlightenments as rules


def facts(kind: str, module: str | None) -> HostFacts:
    return HostFacts(cpu_vendor="intel" if module == "kvm_intel" else "amd", cpu_flags=frozenset(),
                     kvm_device=kind != "absent", kvm_kind=kind, kvm_module=module, kvm_nested=True,
                     kvm_max_vcpus=1024, qemu_path="/usr/bin/qemu-system-x86_64", qemu_version="7.2.0",
                     mem_total=8 << 30, tsc_khz=2_000_000, cpus=2)


INTEL, AMD, TCG = facts("hardware", "kvm_intel"), facts("hardware", "kvm_amd"), facts("pvm", "kvm_pvm")


def test_evmcs_only_on_intel_kvm() -> None:
    intel = rules.flags("hyperv", accel_policy.choose(INTEL), INTEL)
    amd = rules.flags("hyperv", accel_policy.choose(AMD), AMD)
    assert "hv-evmcs" in intel and "hv-evmcs" not in amd
    for flag in ("hv-relaxed", "hv-vapic", "hv-spinlocks=0x1fff", "hv-vpindex", "hv-runtime", "hv-synic",
                 "hv-stimer", "hv-time", "hv-frequencies", "hv-tlbflush", "hv-ipi", "kvm=off"):
        assert flag in amd
    assert rules.flags("off", accel_policy.choose(INTEL), INTEL) == ()


def test_kvm_gives_all() -> None:
    rules.check_available("w", "hyperv", accel_policy.choose(AMD), "cannot start")
    assert rules.missing("hyperv", accel_policy.choose(INTEL)) == ()


def test_tcg_refuses_naming_the_flags() -> None:
    accel = accel_policy.choose(TCG)
    assert "hv-vpindex" in rules.missing("hyperv", accel)
    with pytest.raises(StateError) as err:
        rules.check_available("w", "hyperv", accel, "cannot start")
    assert "hv-vpindex" in err.value.message and "hv-relaxed" in err.value.message
    assert "--enlightenments off" in (err.value.hint or "")
    rules.check_available("w", "off", accel, "cannot start")  # off is always fine


def test_unknown_mode() -> None:
    with pytest.raises(InvalidInput):
        rules.validate_mode("windows")


def test_argv_cpu_flags_and_tpm() -> None:
    spec = argv.LaunchSpec(name="w", vm_dir=Path("/v"), accel="kvm", cpu_model="host", vcpus=2, memory=4 << 30,
                           kernel=None, machine="q35", cpu_flags=("hv-relaxed", "kvm=off"),
                           tpm_socket=Path("/v/tpm/swtpm.sock"))
    out = argv.build(spec)
    assert out[out.index("-cpu") + 1] == "host,hv-relaxed,kvm=off"
    assert "socket,id=tpm0,path=/v/tpm/swtpm.sock" in out
    assert "tpm-crb,tpmdev=tpm0" in out
    plain = argv.build(argv.LaunchSpec(name="w", vm_dir=Path("/v"), accel="kvm", cpu_model="host", vcpus=1,
                                       memory=1 << 30, kernel=None))
    assert plain[plain.index("-cpu") + 1] == "host" and "-tpmdev" not in plain
