"""Turning a VM's virtual TPM on or off (Hyper-V's Enable-VMTPM / Disable-VMTPM): when it may be
done, what it keeps, and what applying a checkpoint does to it. Pure: the VM's state and kind in,
a refusal (or nothing) out."""

from __future__ import annotations

from ..errors import InvalidInput, PolicyError
from ..model import VMState

RULE = "tpm-offline"


def check_change(name: str, state: VMState, on: bool, disk_image: bool, delete_state: bool) -> None:
    """Refuse a TPM change nestor cannot make now.

    Only while the VM is off: a running guest would lose (or suddenly gain) a device under it,
    and a saved one resumes with the devices it was saved with. Only disk-image VMs (q35) have
    the TPM's CRB interface. `delete_state` (forget the TPM's keys) only goes with turning it off."""
    if delete_state and on:
        raise InvalidInput("--delete-state goes with --off (it deletes the TPM's state)",
                           hint=f"nestor vm set-tpm {name} --off --delete-state")
    if state is not VMState.OFF:
        if state is VMState.SAVED:
            hint = f"nestor vm start {name} resumes it (then stop it), or nestor vm stop {name} --turn-off discards it"
        else:
            hint = f"nestor vm stop {name}"
        raise PolicyError(f"vm '{name}' is {state.value}: its TPM can only be turned on or off while it is off",
                          hint=hint, rule=RULE)
    if on and not disk_image:
        raise InvalidInput(f"vm '{name}' boots a built-in image or a kernel: a TPM is for disk-image VMs",
                           hint="make a VM from a disk image: nestor vm new NAME --image debian-bookworm --tpm")


def on_apply(at_checkpoint: bool | None, now: bool) -> bool | None:
    """The TPM setting applying a checkpoint gives the VM, or None for no change.

    Hyper-V restores a VM's configuration with a checkpoint, its security settings included, so
    the VM gets the TPM setting it had when the checkpoint was taken (a running VM's checkpoint
    cannot be loaded into a QEMU without the TPM its memory holds, nor one without it into a QEMU
    with it). `at_checkpoint` None: a checkpoint from before nestor recorded it, taken to have the
    VM's setting now."""
    if at_checkpoint is None or at_checkpoint == now:
        return None
    return at_checkpoint
