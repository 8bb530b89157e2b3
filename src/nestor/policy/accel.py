"""Which accelerator and CPU model a VM gets on this host (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass

from ..host.facts import HostFacts

# QEMU's own limit for x86 machines under TCG (pc/q35/microvm max_cpus).
TCG_MAX_VCPUS = 288
# The seed's R6: a Windows Server 2019 L1 should have at most 225 vCPUs.
NESTED_VCPU_ADVICE = 225


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" | "tcg"
    reason: str
    max_vcpus: int
    nesting_available: bool
    nesting_reason: str
    vendor_flag: str | None  # the flag a nested-enabled guest sees: "svm" | "vmx"

    def cpu_model(self, nested: bool) -> str:
        """The -cpu value; hidden must really hide (no svm/vmx in the guest)."""
        if self.name == "kvm":
            return "host" if nested else "host,-vmx,-svm"
        return "max" if nested else "max,svm=off"


def choose(facts: HostFacts) -> Accel:
    if facts.kvm_kind == "hardware":
        flag = "vmx" if facts.kvm_module == "kvm_intel" else "svm"
        if facts.kvm_nested:
            nesting, why = True, f"{facts.kvm_module} nested=1 exposes {flag} to guests"
        else:
            nesting, why = False, f"{facts.kvm_module} is loaded with nested=0"
        return Accel(
            name="kvm",
            reason=f"/dev/kvm is hardware virtualization ({facts.kvm_module})",
            max_vcpus=facts.kvm_max_vcpus or 1024,
            nesting_available=nesting,
            nesting_reason=why,
            vendor_flag=flag,
        )
    if facts.kvm_kind == "pvm":
        reason = "/dev/kvm is PVM (kvm_pvm), which emulates ring 0 and cannot run standard kernels"
    else:
        reason = "/dev/kvm is absent"
    if facts.level > 0:
        # A nestor guest without VT-x/AMD-V: its host runs it with nesting off (the seed's
        # "extensions not exposed"). Emulating AMD-V under TCG inside TCG is not offered.
        return Accel(
            name="tcg", reason=reason, max_vcpus=TCG_MAX_VCPUS, nesting_available=False,
            nesting_reason=f"this is a nestor guest (L{facts.level}) whose host does not expose virtualization "
                           "extensions to it (nested virtualization is off for this VM)",
            vendor_flag="svm",
        )
    return Accel(
        name="tcg",
        reason=reason,
        max_vcpus=TCG_MAX_VCPUS,
        nesting_available=True,
        nesting_reason="TCG emulates AMD-V (svm with NPT) with -cpu max",
        vendor_flag="svm",
    )
