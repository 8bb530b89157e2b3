"""The cmdlets `nestor ps` accepts, each mapped onto the service facade (nestor.service.Service).

Every cmdlet has a :class:`~nestor.ps.parse.Signature` (its parameters and their types, and the
native nestor command that does the same), a ``run`` function over the facade, the kinds of
pipeline objects it takes and the kind it writes. Names are folded to lower case: PowerShell
compares names case-insensitively and nestor's names are lower case, so ``VmNAT`` and the
``VmNat`` of ``"vEthernet (VmNat)"`` are one switch, ``vmnat``.

Cmdlets nestor knows but does not offer (disks, …) are refused when the script is
parsed, with the nestor command to use instead, so a script that names one changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from . import checkpoints, network, vms
from .objects import PSObject
from .parse import (
    Command,
    Param,
    Signature,
    boolean,
    choice,
    computer_name,
    integer,
    ipv4,
    ipv4_prefix,
    name_pattern,
    nestor_name,
    prefix_length,
    size,
    text,
)
from .session import Session
from .tokenize import Token

Run = Callable[[Session, Command, PSObject | None], list[PSObject]]


@dataclass(frozen=True)
class Cmdlet:
    signature: Signature
    run: Run
    accepts: tuple[str, ...] = ()  # kinds of pipeline objects it takes
    outputs: str | None = None  # the kind of objects it writes
    passthru: bool = False  # writes them only with -Passthru
    check: Callable[[Command], None] | None = None  # more checks at parse time

    @property
    def name(self) -> str:
        return self.signature.name


# -- parameter shapes shared by many cmdlets ---------------------------------------------------
VM_NAME = nestor_name("vm")
SWITCH_NAME = nestor_name("switch")
NAT_NAME = nestor_name("nat")
CHECKPOINT_NAME = nestor_name("checkpoint")
PASSTHRU = Param("Passthru", None, aliases=("PassThru",))
# -ComputerName: the nested host (a VM path) whose nestor runs the cmdlet, as Hyper-V runs it on that host
COMPUTER = Param("ComputerName", computer_name, yields=True)
REMOTE = {
    "ComputerName": "this cmdlet runs on this host only (nestor ps keeps its data here); "
                    "run it inside the level: nestor vm exec l1 -- nestor ps -c '...'",
    "CimSession": "nestor ps drives this host; for another host run nestor there",
    "Credential": "nestor ps drives this host; no credentials are needed",
    "WhatIf": "nestor ps has no dry run; run the native nestor command to see what it would do",
    "Confirm": "nestor ps never asks for confirmation: it just runs",
    "AsJob": "nestor ps runs each command to its end; no jobs",
}


def _vm_param(name: str = "Name", aliases: tuple[str, ...] = ("VMName",), required: bool = True) -> Param:
    return Param(name, VM_NAME, aliases=aliases, position=0, required=required, pipeline=True)


def _generation(token: Token, what: str) -> int:
    value = integer(token, what)
    if value == 2:
        raise InvalidInput(f"{what} 2 is not available: nestor has no generation 2 (UEFI) VMs yet ({token.where})",
                           hint="omit -Generation, or give -Generation 1 (nestor VMs boot like generation 1)")
    if value != 1:
        raise InvalidInput(f"{what} must be 1 or 2, not {value} ({token.where})", hint="omit -Generation")
    return value


def _address_family(token: Token, what: str) -> str:
    value = choice("IPv4", "IPv6")(token, what)
    if value == "IPv6":
        raise InvalidInput(f"{what} IPv6 is not supported: nestor switches have IPv4 addresses ({token.where})",
                           hint="use -AddressFamily IPv4")
    return str(value)


# -- formatting ------------------------------------------------------------------------------------
def format_list(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [dataclasses.replace(obj, view="list")] if obj is not None else []


def format_table(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [dataclasses.replace(obj, view="table")] if obj is not None else []


def out_null(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return []


# -- the table -----------------------------------------------------------------------------------
def _sig(name: str, native: str, *params: Param, unsupported: dict[str, str] | None = None,
         raw: Callable[[list[Token]], Any] | None = None, levels: bool = True) -> Signature:
    """A cmdlet's signature; with `levels` (the default) it takes -ComputerName, a level below."""
    return Signature(name, (*params, COMPUTER) if levels and raw is None else params, native,
                     {**REMOTE, **(unsupported or {})}, raw)


NO_DISKS = "nestor VMs boot an image (nestor vm new NAME --image appliance|nested-host); disks come later"

CMDLETS: tuple[Cmdlet, ...] = (
    Cmdlet(_sig("Get-VM", "nestor vm list / nestor vm show NAME",
                Param("Name", name_pattern, aliases=("VMName",), position=0)),
           vms.get_vm, outputs="vm"),
    Cmdlet(_sig("New-VM", "nestor vm new NAME [--memory SIZE] [--switch SW]",
                Param("Name", VM_NAME, aliases=("VMName",), position=0, required=True),
                Param("MemoryStartupBytes", size, position=1),
                Param("SwitchName", SWITCH_NAME),
                Param("Generation", _generation),
                Param("Version", text),
                unsupported={"Path": "nestor keeps VMs in its home (--home DIR)",
                             "NewVHDPath": NO_DISKS, "NewVHDSizeBytes": NO_DISKS, "VHDPath": NO_DISKS,
                             "NoVHD": NO_DISKS, "BootDevice": NO_DISKS,
                             "Prerelease": "nestor has no prerelease configuration versions",
                             "Force": "New-VM needs no -Force"}),
           vms.new_vm, outputs="vm"),
    Cmdlet(_sig("Start-VM", "nestor vm start NAME", _vm_param(), PASSTHRU), vms.start_vm, ("vm",), "vm", passthru=True),
    Cmdlet(_sig("Stop-VM", "nestor vm stop NAME [--turn-off]", _vm_param(),
                Param("TurnOff", None), Param("Force", None), Param("Save", None), PASSTHRU),
           vms.stop_vm, ("vm",), "vm", passthru=True),
    Cmdlet(_sig("Save-VM", "nestor vm save NAME", _vm_param(), PASSTHRU), vms.save_vm, ("vm",), "vm", passthru=True),
    Cmdlet(_sig("Remove-VM", "nestor vm remove NAME [--force]", _vm_param(), Param("Force", None)),
           vms.remove_vm, ("vm",)),
    Cmdlet(_sig("Update-VMVersion", "nestor vm upgrade NAME", _vm_param(), Param("Force", None)),
           vms.update_vmversion, ("vm",)),
    Cmdlet(_sig("Set-VMProcessor",
                "nestor vm set-processor NAME [--count N] [--expose-virtualization-extensions on|off] "
                "[--enlightenments hyperv|off]",
                _vm_param("VMName", ()), Param("ExposeVirtualizationExtensions", boolean),
                Param("EnableHyperVEnlightenments", boolean),
                Param("Count", integer), PASSTHRU,
                unsupported={k: "nestor vm set-processor offers --count and --expose-virtualization-extensions"
                             for k in ("Reserve", "Maximum", "RelativeWeight", "CompatibilityForMigrationEnabled",
                                       "CompatibilityForOlderOperatingSystemsEnabled", "HwThreadCountPerCore",
                                       "EnableHostResourceProtection", "MaximumCountPerNumaNode",
                                       "MaximumCountPerNumaSocket")}),
           vms.set_vmprocessor, ("vm", "processor"), "processor", passthru=True, check=vms.check_processor),
    Cmdlet(_sig("Get-VMProcessor", "nestor vm show NAME", _vm_param("VMName", ())),
           vms.get_vmprocessor, ("vm",), "processor"),
    Cmdlet(_sig("Enable-VMTPM", "nestor vm set-tpm NAME --on", _vm_param("VMName", ()), PASSTHRU,
                unsupported={"VMTPM": "pipe the VMs in: Get-VM NAME | Enable-VMTPM"}),
           vms.enable_vmtpm, ("vm", "security"), "security", passthru=True),
    Cmdlet(_sig("Disable-VMTPM", "nestor vm set-tpm NAME --off", _vm_param("VMName", ()), PASSTHRU,
                unsupported={"VMTPM": "pipe the VMs in: Get-VM NAME | Disable-VMTPM"}),
           vms.disable_vmtpm, ("vm", "security"), "security", passthru=True),
    Cmdlet(_sig("Get-VMSecurity", "nestor vm show NAME", _vm_param("VMName", ())),
           vms.get_vmsecurity, ("vm",), "security"),
    Cmdlet(_sig("Set-VMKeyProtector", "(none: a nestor TPM needs no key protector)", _vm_param("VMName", ()),
                Param("NewLocalKeyProtector", None),
                unsupported={"KeyProtector": "nestor's TPM state is private in the VM's directory: no key protector",
                             "RestoreLastKnownGoodKeyProtector": "nestor keeps no key protectors"}),
           vms.set_vmkeyprotector, ("vm",)),
    Cmdlet(_sig("Set-VMMemory",
                "nestor vm set-memory NAME [--startup SIZE] [--dynamic on|off] [--minimum SIZE] [--maximum SIZE] "
                "[--buffer PCT]",
                _vm_param("VMName", ()), Param("DynamicMemoryEnabled", boolean), Param("StartupBytes", size),
                Param("MinimumBytes", size), Param("MaximumBytes", size), Param("Buffer", integer), PASSTHRU,
                unsupported={k: "nestor vm set-memory offers startup, dynamic, minimum, maximum and buffer"
                             for k in ("Priority", "MaximumAmountPerNumaNodeBytes", "ResourcePoolName")}),
           vms.set_vmmemory, ("vm", "memory"), "memory", passthru=True, check=vms.check_memory),
    Cmdlet(_sig("Get-VMMemory", "nestor vm show NAME", _vm_param("VMName", ())), vms.get_vmmemory, ("vm",), "memory"),
    Cmdlet(_sig("Get-VMNetworkAdapter", "nestor adapter list VM",
                _vm_param("VMName", ()), Param("Name", name_pattern),
                unsupported={"All": "name the VM: Get-VMNetworkAdapter -VMName VM (nestor adapter list VM)",
                             "ManagementOS": "the host's adapters: Get-NetAdapter \"vEthernet (SWITCH)\""}),
           network.get_vmnetworkadapter, ("vm",), "adapter"),
    Cmdlet(_sig("Set-VMNetworkAdapter", "nestor adapter set VM [--name A] --mac-spoofing on|off",
                _vm_param("VMName", ()), Param("Name", nestor_name("adapter")),
                Param("MacAddressSpoofing", choice("On", "Off"), required=True), PASSTHRU,
                unsupported={"DhcpGuard": "DHCP guard is not in nestor yet",
                             "RouterGuard": "router guard is not in nestor yet",
                             "StaticMacAddress": "nestor adapter remove VM A, then nestor adapter add VM --mac MAC",
                             "VMNetworkAdapter": "pipe the adapters in: Get-VMNetworkAdapter -VMName VM | Set-VMNetworkAdapter …",
                             "ManagementOS": "the host's adapter has no MAC guard in nestor"}),
           network.set_vmnetworkadapter, ("vm", "adapter"), "adapter", passthru=True),
    Cmdlet(_sig("Add-VMNetworkAdapter", "nestor adapter add VM --switch SW [--mac MAC] [--name A]",
                _vm_param("VMName", ()), Param("SwitchName", SWITCH_NAME, required=True),
                Param("Name", nestor_name("adapter")), Param("StaticMacAddress", text), PASSTHRU),
           network.add_vmnetworkadapter, ("vm",), "adapter", passthru=True),
    Cmdlet(_sig("New-VMSwitch", "nestor switch new NAME --type internal|private|external [--uplink IFACE]",
                Param("Name", SWITCH_NAME, position=0, required=True),
                Param("SwitchType", choice("Internal", "Private", "External")),
                Param("NetAdapterName", text), Param("AllowManagementOS", boolean),
                unsupported={"NetAdapterInterfaceDescription": "name the uplink: -NetAdapterName IFACE",
                             "EnableEmbeddedTeaming": "teaming is not in nestor",
                             "EnableIov": "SR-IOV is not in nestor", "MinimumBandwidthMode": "QoS is not in nestor",
                             "EnablePacketDirect": "not in nestor", "Notes": "switches have no notes in nestor"}),
           network.new_vmswitch, outputs="switch", check=network.check_new_switch),
    Cmdlet(_sig("Get-VMSwitch", "nestor switch list", Param("Name", name_pattern, position=0)),
           network.get_vmswitch, outputs="switch"),
    Cmdlet(_sig("Remove-VMSwitch", "nestor switch remove NAME",
                Param("Name", SWITCH_NAME, position=0, required=True, pipeline=True), Param("Force", None)),
           network.remove_vmswitch, ("switch",)),
    Cmdlet(_sig("Get-NetAdapter", "nestor switch list",
                Param("Name", text, aliases=("InterfaceAlias", "ifAlias"), position=0),
                unsupported={"InterfaceIndex": "name the adapter: Get-NetAdapter \"vEthernet (SWITCH)\"",
                             "Physical": "nestor manages only the host's adapters on its switches"}),
           network.get_netadapter, outputs="netadapter"),
    Cmdlet(_sig("New-NetIPAddress", "nestor switch set-ip SWITCH ADDR/PREFIX",
                Param("IPAddress", ipv4, position=0, required=True),
                Param("InterfaceAlias", text, aliases=("ifAlias",), required=True, pipeline=True),
                Param("PrefixLength", prefix_length), Param("DefaultGateway", ipv4),
                Param("AddressFamily", _address_family), Param("Type", choice("Unicast")),
                unsupported={"InterfaceIndex": "name the adapter: -InterfaceAlias \"vEthernet (SWITCH)\"",
                             "SkipAsSource": "not in nestor", "PolicyStore": "addresses are kept in nestor's store",
                             "ValidLifetime": "nestor's addresses do not expire",
                             "PreferredLifetime": "nestor's addresses do not expire"}),
           network.new_netipaddress, ("netadapter",), "ipaddress", check=network.check_new_ip),
    Cmdlet(_sig("New-NetNat", "nestor nat new NAME --switch SW --prefix CIDR",
                Param("Name", NAT_NAME, position=0, required=True),
                Param("InternalIPInterfaceAddressPrefix", ipv4_prefix),
                unsupported={k: "nestor NATs masquerade one internal prefix (nestor nat new … --prefix CIDR)"
                             for k in ("ExternalIPInterfaceAddressPrefix", "InternalRoutingDomainId",
                                       "IcmpQueryTimeout", "TcpEstablishedConnectionTimeout",
                                       "TcpTransientConnectionTimeout", "TcpFilteringBehavior",
                                       "UdpFilteringBehavior", "UdpIdleSessionTimeout", "UdpInboundRefresh",
                                       "Store", "Active")}),
           network.new_netnat, outputs="nat", check=network.check_new_nat),
    Cmdlet(_sig("Get-NetNat", "nestor nat list", Param("Name", name_pattern, position=0)), network.get_netnat, outputs="nat"),
    Cmdlet(_sig("Remove-NetNat", "nestor nat remove NAME",
                Param("Name", NAT_NAME, position=0, required=True, pipeline=True)),
           network.remove_netnat, ("nat",)),
    Cmdlet(_sig("Netsh", "(no nestor command: nestor ps keeps the DNS server; see docs/ps.md)", raw=network.netsh),
           network.run_netsh),
    Cmdlet(_sig("Set-DnsClientServerAddress", "(no nestor command: nestor ps keeps the DNS server; see docs/ps.md)",
                Param("InterfaceAlias", text, aliases=("ifAlias",), position=0, required=True, pipeline=True),
                Param("ServerAddresses", ipv4, required=True),
                unsupported={"ResetServerAddresses": "not in nestor ps", "InterfaceIndex": "use -InterfaceAlias"},
                levels=False),
           network.set_dnsclientserveraddress, ("netadapter",)),
    Cmdlet(_sig("Checkpoint-VM", "nestor vm checkpoint new VM NAME",
                _vm_param(), Param("SnapshotName", CHECKPOINT_NAME, aliases=("CheckpointName",), position=1),
                PASSTHRU),
           checkpoints.checkpoint_vm, ("vm",), "checkpoint", passthru=True),
    Cmdlet(_sig("Get-VMCheckpoint", "nestor vm checkpoint list VM",
                _vm_param("VMName", ()), Param("Name", name_pattern, position=1),
                unsupported={"SnapshotType": "nestor checkpoints are all of one type (Standard: with memory "
                                             "when the VM runs)",
                             "VM": "pipe the VMs in: Get-VM NAME | Get-VMCheckpoint", "Id": "name the checkpoint: -Name"}),
           checkpoints.get_vmcheckpoint, ("vm",), "checkpoint"),
    Cmdlet(_sig("Restore-VMCheckpoint", "nestor vm checkpoint apply VM NAME",
                Param("Name", name_pattern, position=0, required=True, pipeline=True),
                Param("VMName", VM_NAME, required=True, pipeline=True), PASSTHRU,
                unsupported={"VMSnapshot": "pipe the checkpoint in: Get-VMCheckpoint -VMName VM -Name C | "
                                           "Restore-VMCheckpoint", "Id": "name the checkpoint: -Name"}),
           checkpoints.restore_vmcheckpoint, ("checkpoint",), "checkpoint", passthru=True),
    Cmdlet(_sig("Remove-VMCheckpoint", "nestor vm checkpoint remove VM NAME",
                _vm_param("VMName", ()), Param("Name", name_pattern, position=1, pipeline=True),
                unsupported={"IncludeAllChildSnapshots": "nestor checkpoints have no children: each is removed alone",
                             "VMSnapshot": "pipe the checkpoint in: Get-VMCheckpoint -VMName VM -Name C | "
                                           "Remove-VMCheckpoint"}),
           checkpoints.remove_vmcheckpoint, ("vm", "checkpoint")),
    Cmdlet(_sig("Format-List", "-o json (every property)", levels=False), format_list, ("*",), "formatted"),
    Cmdlet(_sig("Format-Table", "(the default view)", levels=False), format_table, ("*",), "formatted"),
    Cmdlet(_sig("Out-Null", "(no output)", levels=False), out_null, ("*",)),
    Cmdlet(_sig("Get-DnsClientServerAddress", "(nestor ps only; see docs/ps.md)",
                Param("InterfaceAlias", text, aliases=("ifAlias",), position=0, pipeline=True),
                Param("AddressFamily", _address_family), levels=False),
           network.get_dnsclientserveraddress, ("netadapter",), "dns"),
)

BY_NAME = {c.name.lower(): c for c in CMDLETS}
BY_NAME["netsh.exe"] = BY_NAME["netsh"]
BY_NAME["fl"] = BY_NAME["format-list"]
BY_NAME["ft"] = BY_NAME["format-table"]
for _old, _new in (("get-vmsnapshot", "get-vmcheckpoint"),
                   ("restore-vmsnapshot", "restore-vmcheckpoint"), ("remove-vmsnapshot", "remove-vmcheckpoint")):
    BY_NAME[_old] = BY_NAME[_new]  # Hyper-V's older names of the same cmdlets

NOT_OFFERED: dict[str, tuple[str, str]] = {
    # cmdlet: (what is wrong, the hint: the nestor command to use)
    "rename-vmcheckpoint": ("renaming checkpoints is not in nestor",
                            "Checkpoint-VM NAME NEWNAME, then Remove-VMCheckpoint -VMName NAME -Name OLDNAME"),
    "export-vmcheckpoint": ("exporting checkpoints is not in nestor", "nestor vm checkpoint list VM"),
    "set-vm": ("Set-VM is not supported", "nestor vm set-processor NAME / nestor vm set-memory NAME "
               "(Set-VMProcessor, Set-VMMemory)"),
    "rename-vm": ("renaming VMs is not in nestor yet", "nestor vm new NEWNAME, then nestor vm remove OLDNAME"),
    "export-vm": ("exporting VMs is not in nestor yet", "nestor vm save NAME keeps its state in its directory"),
    "import-vm": ("importing VMs is not in nestor yet", "nestor vm new NAME --image …"),
    "move-vm": ("moving VMs is not in nestor yet", "nestor vm stop NAME, then recreate it on the other host"),
    "get-vmhost": ("Get-VMHost is not supported", "nestor host check"),
    "measure-vm": ("Measure-VM is not supported", "nestor vm show NAME"),
    "connect-vmnetworkadapter": ("Connect-VMNetworkAdapter is not supported",
                                 "nestor adapter remove VM A, then nestor adapter add VM --switch SW"),
    "remove-vmnetworkadapter": ("Remove-VMNetworkAdapter is not supported", "nestor adapter remove VM A"),
    "set-vmswitch": ("Set-VMSwitch is not supported", "nestor switch remove NAME, then nestor switch new NAME --type …"),
    "get-netipaddress": ("Get-NetIPAddress is not supported", "nestor switch list (the ADDRESS column)"),
    "remove-netipaddress": ("Remove-NetIPAddress is not supported", "nestor switch set-ip SWITCH ADDR/PREFIX"),
    "new-vhd": ("virtual disks are not in nestor yet", NO_DISKS),
    "add-vmharddiskdrive": ("virtual disks are not in nestor yet", NO_DISKS),
    "set-vmfirmware": ("generation 2 (UEFI) VMs are not available in nestor yet", "nestor VMs boot like generation 1"),
    "invoke-command": ("Invoke-Command is not supported", "nestor vm exec VM -- CMD [ARG...]"),
    "enter-pssession": ("Enter-PSSession is not supported", "nestor vm console VM, or nestor vm exec VM -- CMD"),
    "vmconnect": ("vmconnect is not supported", "nestor vm console VM"),
    "install-windowsfeature": ("nestor runs on Linux: there is no Hyper-V feature to install",
                               "nestor host check shows what this host offers"),
    "enable-windowsoptionalfeature": ("nestor runs on Linux: there is no Hyper-V feature to install",
                                      "nestor host check shows what this host offers"),
}


def lookup(token: Token) -> Signature:
    return cmdlet_for(token).signature


def cmdlet_for(token: Token) -> Cmdlet:
    key = token.text.lower()
    if key in BY_NAME:
        return BY_NAME[key]
    if key in NOT_OFFERED:
        message, instead = NOT_OFFERED[key]
        raise InvalidInput(f"{token.text}: {message} ({token.where}); the nestor command: {instead}",
                           hint="nestor ps --cmdlets lists the cmdlets nestor ps accepts")
    raise InvalidInput(f"'{token.text}' is not a cmdlet nestor ps accepts ({token.where})",
                       hint="nestor ps --cmdlets lists them with their nestor commands; nestor --help lists the rest")
