"""`nestor host check`: each prerequisite with pass/fail and a fix (seed R3/R4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..host.facts import HostFacts
from .accel import choose


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def host_checks(facts: HostFacts) -> list[Check]:
    accel = choose(facts)
    flags = facts.cpu_flags
    checks = [
        Check(
            "cpu vendor",
            facts.cpu_vendor != "unknown",
            facts.cpu_vendor,
            "" if facts.cpu_vendor != "unknown" else "nestor supports Intel and AMD x86-64 CPUs",
        )
    ]
    if "vmx" in flags:
        ok = "ept" in flags
        checks.append(Check("virtualization extensions", ok, "Intel VT-x" + (" + EPT" if ok else " without EPT"),
                            "" if ok else "enable EPT in the firmware"))
    elif "svm" in flags:
        ok = "npt" in flags
        checks.append(Check("virtualization extensions", ok, "AMD-V" + (" + NPT" if ok else " without NPT"),
                            "" if ok else "enable NPT (RVI) in the firmware"))
    else:
        hv = " (this host is itself a VM)" if "hypervisor" in flags else ""
        checks.append(Check("virtualization extensions", False, f"no vmx/svm in /proc/cpuinfo{hv}",
                            "enable VT-x/AMD-V in the firmware, or expose it from the outer hypervisor; "
                            "without it nestor uses TCG"))
    kind_detail = {
        "hardware": f"present, hardware virtualization ({facts.kvm_module})",
        "pvm": "present, but PVM (kvm_pvm): emulates guest ring 0, standard kernels fail under it",
        "absent": "absent",
    }[facts.kvm_kind]
    checks.append(Check("/dev/kvm", facts.kvm_kind == "hardware", kind_detail,
                        "" if facts.kvm_kind == "hardware" else
                        "load kvm_intel or kvm_amd on a host with VT-x/AMD-V; until then nestor uses TCG"))
    if facts.kvm_module in ("kvm_intel", "kvm_amd"):
        checks.append(Check(f"{facts.kvm_module} nested", bool(facts.kvm_nested),
                            "nested=1" if facts.kvm_nested else "nested=0",
                            "" if facts.kvm_nested else
                            f"modprobe -r {facts.kvm_module} && modprobe {facts.kvm_module} nested=1"))
    checks.append(Check("qemu", facts.qemu_version is not None,
                        f"{facts.qemu_path} {facts.qemu_version}" if facts.qemu_version else "qemu-system-x86_64 not found",
                        "" if facts.qemu_version else "apt-get install qemu-system-x86"))
    checks.append(Check("accelerator", True, f"{accel.name}: {accel.reason}"))
    model = accel.cpu_model(True)
    checks.append(Check("nested virtualization", accel.nesting_available,
                        f"available: {accel.nesting_reason}; guests get -cpu {model}"
                        if accel.nesting_available else f"not available: {accel.nesting_reason}",
                        "" if accel.nesting_available else _nesting_fix(facts)))
    return checks


def _nesting_fix(facts: HostFacts) -> str:
    if facts.kvm_module in ("kvm_intel", "kvm_amd"):
        return f"modprobe -r {facts.kvm_module} && modprobe {facts.kvm_module} nested=1"
    return ("on the outer host: nestor vm stop THIS-VM && "
            "nestor vm set-processor THIS-VM --expose-virtualization-extensions on")
