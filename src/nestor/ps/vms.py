"""The VM cmdlets: lifecycle (New/Get/Start/Stop/Save/Remove-VM, Update-VMVersion), processor
and memory, each over nestor.service.Service."""

from __future__ import annotations

import fnmatch

from ..errors import InvalidInput
from ..service import MemoryChange, VMSpec
from . import objects as ob
from .objects import PSObject
from .parse import Command
from .session import Session, is_pattern, targets


# -- VMs -----------------------------------------------------------------------------------------
def get_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    pattern = cmd.get("Name")
    if pattern is not None and not is_pattern(pattern):
        return [ob.vm(s.service.vm_show(pattern))]
    infos = s.service.vm_list()
    return [ob.vm(i) for i in infos if pattern is None or fnmatch.fnmatchcase(i.name, pattern)]


def new_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    switch = cmd.get("SwitchName")
    spec = VMSpec(name=cmd.args["Name"], memory=cmd.get("MemoryStartupBytes", VMSpec.memory),
                  config_version=cmd.get("Version"), switches=(switch,) if switch else ())
    result = s.service.vm_new(spec)
    for warning in result.warnings:
        s.note(f"warning: {warning}")
    return [ob.vm(result.vm)]


def start_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in targets(cmd, obj):
        info = s.service.vm_start(name)
        s.note(f"vm '{name}' started (pid {info.pid}, {info.accelerator})")
        out.append(ob.vm(info))
    return out if cmd.get("Passthru") else []


def stop_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in targets(cmd, obj):
        if cmd.get("Save"):
            result = s.service.vm_save(name)
            s.note(f"vm '{name}' saved ({result.size >> 20} MiB state)")
        else:
            stopped = s.service.vm_stop(name, turn_off=bool(cmd.get("TurnOff")))
            s.note(f"vm '{name}' {stopped.how.value}")
        if cmd.get("Passthru"):
            out.append(ob.vm(s.service.vm_show(name)))
    return out


def save_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in targets(cmd, obj):
        result = s.service.vm_save(name)
        s.note(f"vm '{name}' saved ({result.size >> 20} MiB state)")
        if cmd.get("Passthru"):
            out.append(ob.vm(s.service.vm_show(name)))
    return out


def remove_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    for name in targets(cmd, obj):
        s.service.vm_remove(name, force=bool(cmd.get("Force")))
        s.note(f"vm '{name}' removed")
    return []


def update_vmversion(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    for name in targets(cmd, obj):
        info = s.service.vm_upgrade(name)
        s.note(f"vm '{name}' is at configuration version {info.config_version}")
    return []


# -- processor and memory ----------------------------------------------------------------------
def check_processor(cmd: Command) -> None:
    if not {"Count", "ExposeVirtualizationExtensions", "EnableHyperVEnlightenments"} & set(cmd.args):
        raise InvalidInput(f"Set-VMProcessor: nothing to change ({cmd.token.where})",
                           hint="give -ExposeVirtualizationExtensions $true|$false, -EnableHyperVEnlightenments "
                                "$true|$false and/or -Count N")


def set_vmprocessor(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in targets(cmd, obj, "VMName"):
        hv = cmd.get("EnableHyperVEnlightenments")
        kwargs = {} if hv is None else {"enlightenments": "hyperv" if hv else "off"}
        result = s.service.vm_set_processor(name, count=cmd.get("Count"),
                                            nested=cmd.get("ExposeVirtualizationExtensions"), **kwargs)
        for warning in result.warnings:
            s.note(f"warning: {warning}")
        s.note(f"vm '{name}': {result.vm.vcpus} vCPU(s), virtualization extensions "
               f"{'exposed' if result.vm.nested else 'hidden'}")
        if cmd.get("Passthru"):
            out.append(ob.processor(result.vm))
    return out


def get_vmprocessor(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [ob.processor(s.service.vm_show(name)) for name in targets(cmd, obj, "VMName")]


def _memory_change(cmd: Command) -> MemoryChange:
    return MemoryChange(startup=cmd.get("StartupBytes"), dynamic=cmd.get("DynamicMemoryEnabled"),
                        minimum=cmd.get("MinimumBytes"), maximum=cmd.get("MaximumBytes"), buffer=cmd.get("Buffer"))


def check_memory(cmd: Command) -> None:
    if _memory_change(cmd).empty():
        raise InvalidInput(f"Set-VMMemory: nothing to change ({cmd.token.where})",
                           hint="give -StartupBytes, -DynamicMemoryEnabled, -MinimumBytes, -MaximumBytes or -Buffer")


def set_vmmemory(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in targets(cmd, obj, "VMName"):
        result = s.service.vm_set_memory(name, _memory_change(cmd))
        s.note(f"vm '{name}': memory {result.outcome.value}")
        if cmd.get("Passthru"):
            out.append(ob.memory(s.service.vm_show(name)))
    return out


def get_vmmemory(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [ob.memory(s.service.vm_show(name)) for name in targets(cmd, obj, "VMName")]


# -- the virtual TPM (Enable-VMTPM, Disable-VMTPM, Get-VMSecurity, Set-VMKeyProtector) ------------
def _set_tpm(s: Session, cmd: Command, obj: PSObject | None, on: bool) -> list[PSObject]:
    out = []
    for name in targets(cmd, obj, "VMName"):
        info = s.service.vm_set_tpm(name, on)
        s.note(f"vm '{name}': TPM {'on' if on else 'off (its state kept)'}")
        if cmd.get("Passthru"):
            out.append(ob.security(info))
    return out


def enable_vmtpm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return _set_tpm(s, cmd, obj, True)


def disable_vmtpm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return _set_tpm(s, cmd, obj, False)


def get_vmsecurity(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [ob.security(s.service.vm_show(name)) for name in targets(cmd, obj, "VMName")]


def set_vmkeyprotector(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    """Hyper-V needs a key protector before Enable-VMTPM; nestor's TPM state is private in the VM's
    directory and needs none: the VM must exist, nothing changes."""
    for name in targets(cmd, obj, "VMName"):
        s.service.vm_show(name)
        s.note(f"vm '{name}': no key protector needed (the TPM's state is private in the VM's directory)")
    return []
