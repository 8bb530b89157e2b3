"""The seed's processor rules (DESIGN.md R1-R4, R6) as pure functions."""

from __future__ import annotations

from ..errors import Conflict, InvalidInput, PolicyError, StateError
from ..model import VMState, version_tuple
from .accel import NESTED_VCPU_ADVICE, Accel

# The seed: nesting needs configuration version 8.0 on Intel, 10.0 on AMD (TCG emulates AMD).
NESTING_MIN_VERSION = {"vmx": "8.0", "svm": "10.0"}


def check_offline_change(name: str, state: VMState, what: str) -> None:
    """R2: nested virtualization (and the vCPU count) can only change while the VM is off."""
    if state is not VMState.OFF:
        raise PolicyError(
            f"vm '{name}' is {state.value}: stop it first ({what} can only be changed while the VM is off)",
            hint=f"nestor vm stop {name}",
            rule="R2",
        )


def nesting_min_version(accel: Accel) -> str:
    return NESTING_MIN_VERSION.get(accel.vendor_flag or "svm", "10.0")


def check_nesting_version(name: str, config_version: str, accel: Accel) -> None:
    """R3/R4: too old a configuration version cannot enable nesting until upgraded."""
    need = nesting_min_version(accel)
    if version_tuple(config_version) < version_tuple(need):
        raise StateError(
            f"vm '{name}' has configuration version {config_version}; nested virtualization "
            f"on {accel.vendor_flag or 'svm'} needs version {need} or later",
            hint=f"nestor vm upgrade {name}",
        )


def check_vcpus(count: int, nested: bool, accel: Accel) -> list[str]:
    """R6: an error above the accelerator's maximum; a warning above 225 with nesting on."""
    if count < 1:
        raise InvalidInput(f"vCPU count must be at least 1, not {count}", hint="e.g. --vcpus 2")
    if count > accel.max_vcpus:  # a conflict with this host's accelerator, not a bad request (docs/decisions.md)
        raise Conflict(
            f"{count} vCPUs is more than {accel.name} allows ({accel.max_vcpus})",
            hint=f"use at most {accel.max_vcpus} vCPUs",
        )
    if nested and count > NESTED_VCPU_ADVICE:
        return [
            f"{count} vCPUs on a nested-enabled VM: the seed's rule advises at most "
            f"{NESTED_VCPU_ADVICE} vCPUs for an L1 that runs a hypervisor"
        ]
    return []
