"""Hyper-V enlightenments: which QEMU ``hv-*`` flags a VM gets, and where the accelerator cannot
give them. Pure: fed by host facts.

``hyperv`` is the set Windows and Hyper-V use (as libvirt's ``<hyperv>`` block): relaxed timing,
the virtual APIC assist, spinlock retries, VP index, runtime, SynIC with its timers, the
reference TSC page (``hv-time``: ``hv-stimer`` needs it), frequencies, TLB flush and IPI
hypercalls, and enlightened VMCS where the host is Intel VMX with KVM. ``kvm=off`` hides KVM's own
CPUID signature, so the guest sees one hypervisor, Microsoft Hv (Linux picks KVM when both are
there: its signature sits at a higher CPUID leaf).

Measured on QEMU 7.2 under TCG: ``hv-vpindex`` is refused at start ("kernel doesn't allow
setting HyperV VP_INDEX"), and the others are taken on the command line but the guest sees no
Hyper-V CPUID leaves at all (a Linux guest prints no "Hypervisor detected" line). So TCG gives
none of them: turning them on there is refused, naming the flags.
"""

from __future__ import annotations

from ..errors import InvalidInput, StateError
from ..host.facts import HostFacts
from .accel import Accel

MODES = ("off", "hyperv")

HYPERV_FLAGS = (
    "hv-relaxed", "hv-vapic", "hv-spinlocks=0x1fff", "hv-vpindex", "hv-runtime", "hv-synic", "hv-time",
    "hv-stimer", "hv-frequencies", "hv-tlbflush", "hv-ipi",
)
EVMCS = "hv-evmcs"  # enlightened VMCS: only KVM on Intel VMX (kvm_intel) has it
HIDE_KVM = "kvm=off"
# What TCG refuses outright; the rest it accepts but never shows the guest.
TCG_REFUSED = ("hv-vpindex",)


def validate_mode(mode: str) -> str:
    if mode not in MODES:
        raise InvalidInput(f"unknown enlightenments '{mode}'", hint=f"use one of {', '.join(MODES)}")
    return mode


def flags(mode: str, accel: Accel, facts: HostFacts) -> tuple[str, ...]:
    """The -cpu additions for this mode on this host (nothing for 'off')."""
    if mode != "hyperv":
        return ()
    evmcs = (EVMCS,) if accel.name == "kvm" and facts.kvm_module == "kvm_intel" else ()
    return (*HYPERV_FLAGS, *evmcs, HIDE_KVM)


def missing(mode: str, accel: Accel) -> tuple[str, ...]:
    """The flags of `mode` this accelerator cannot give the guest (empty: all of them)."""
    if mode != "hyperv" or accel.name == "kvm":
        return ()
    return HYPERV_FLAGS


def check_available(name: str, mode: str, accel: Accel, when: str) -> None:
    """Refuse a mode whose flags the accelerator cannot give, naming them (set-processor, vm start)."""
    gone = missing(mode, accel)
    if not gone:
        return
    refused = [f for f in gone if f in TCG_REFUSED]
    detail = (f"QEMU refuses {', '.join(refused)} under TCG and shows the guest none of "
              f"{', '.join(f for f in gone if f not in refused)}")
    raise StateError(
        f"vm '{name}': {when}: Hyper-V enlightenments need KVM; this host runs VMs under "
        f"{accel.name.upper()} ({accel.reason}): {detail}",
        hint=f"nestor vm set-processor {name} --enlightenments off, or run it on a host with hardware KVM "
             "(nestor host check)",
    )
