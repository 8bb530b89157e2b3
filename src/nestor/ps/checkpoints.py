"""The checkpoint cmdlets (Checkpoint-VM, Get-VMCheckpoint, Restore-VMCheckpoint,
Remove-VMCheckpoint, and their older *-VMSnapshot names) over nestor.service.Service: the
native `nestor vm checkpoint new/list/apply/remove`. As there, a checkpoint of a running VM
holds its memory, and it is refused while a hypervisor runs inside the VM (R12-R14)."""

from __future__ import annotations

import fnmatch
import time

from ..errors import NotFound
from . import objects as ob
from .objects import PSObject
from .parse import Command
from .session import Session, is_pattern, targets


def default_name() -> str:
    """Hyper-V names a checkpoint after the VM and the time; nestor's names allow no spaces."""
    return time.strftime("checkpoint-%Y%m%d-%H%M%S")


def checkpoint_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm in targets(cmd, obj):
        name = cmd.get("SnapshotName") or default_name()
        result = s.service.vm_checkpoint_new(vm, name)
        s.note(f"checkpoint '{name}' of vm '{vm}' taken in {result.seconds} s")
        if cmd.get("Passthru"):
            out += [ob.checkpoint(vm, c) for c in s.service.vm_checkpoint_list(vm) if c.name == name]
    return out


def _matching(s: Session, vm: str, pattern: str | None) -> list[PSObject]:
    found = [ob.checkpoint(vm, c) for c in s.service.vm_checkpoint_list(vm)
             if pattern is None or fnmatch.fnmatchcase(c.name, pattern)]
    if pattern is not None and not is_pattern(pattern) and not found:
        raise NotFound(f"vm '{vm}' has no checkpoint '{pattern}'",
                       hint=f"Get-VMCheckpoint -VMName {vm} (nestor vm checkpoint list {vm})")
    return found


def get_vmcheckpoint(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm in targets(cmd, obj, "VMName"):
        out += _matching(s, vm, cmd.get("Name"))
    return out


def _pairs(s: Session, cmd: Command, obj: PSObject | None) -> list[tuple[str, str]]:
    """(vm, checkpoint) pairs: the piped checkpoint, or -VMName and -Name (wildcards allowed)."""
    if obj is not None:
        return [(str(obj["VMName"]), str(obj["Name"]))]
    vm = cmd.args["VMName"]
    return [(vm, str(c["Name"])) for c in _matching(s, vm, cmd.args["Name"])]


def restore_vmcheckpoint(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm, name in _pairs(s, cmd, obj):
        result = s.service.vm_checkpoint_apply(vm, name)
        s.note(f"vm '{vm}' is back at checkpoint '{name}' ({result.seconds} s)")
        if result.tpm_restored is not None:
            s.note(f"vm '{vm}': TPM {'on' if result.tpm_restored else 'off'} again, as at the checkpoint")
        if cmd.get("Passthru"):
            out += [ob.checkpoint(vm, c) for c in s.service.vm_checkpoint_list(vm) if c.name == name]
    return out


def remove_vmcheckpoint(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    if obj is not None and obj.kind == "checkpoint":
        pairs = [(str(obj["VMName"]), str(obj["Name"]))]
    else:  # -VMName or a piped VM; without -Name (Hyper-V's way) every checkpoint of the VM
        pairs = [(vm, str(c["Name"])) for vm in targets(cmd, obj, "VMName") for c in _matching(s, vm, cmd.get("Name"))]
    for vm, name in pairs:
        s.service.vm_checkpoint_remove(vm, name)
        s.note(f"checkpoint '{name}' of vm '{vm}' removed")
    return []
