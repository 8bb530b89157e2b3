"""The cmdlets `nestor ps` accepts, each mapped onto the service facade (nestor.service.Service).

Every cmdlet has a :class:`~nestor.ps.parse.Signature` (its parameters and their types, and the
native nestor command that does the same), a ``run`` function over the facade, the kinds of
pipeline objects it takes and the kind it writes. Names are folded to lower case: PowerShell
compares names case-insensitively and nestor's names are lower case, so ``VmNAT`` and the
``VmNat`` of ``"vEthernet (VmNat)"`` are one switch, ``vmnat``.

Cmdlets nestor knows but does not offer (checkpoints, disks, …) are refused when the script is
parsed, with the nestor command to use instead, so a script that names one changes nothing.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import Conflict, InvalidInput, NotFound
from ..model import validate_name
from ..service import MemoryChange, Service, VMSpec
from . import dns
from . import objects as ob
from .objects import PSObject
from .parse import (
    Command,
    Param,
    Signature,
    boolean,
    choice,
    integer,
    ipv4,
    ipv4_prefix,
    name_pattern,
    nestor_name,
    prefix_length,
    size,
    text,
)
from .tokenize import Kind, Token

Note = Callable[[str], None]
_VNIC_RE = re.compile(r"^\s*vEthernet\s*\((.+)\)\s*$", re.IGNORECASE)
_WILDCARDS = set("*?[")


@dataclass
class Session:
    service: Service
    note: Note


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
PASSTHRU = Param("Passthru", None, aliases=("PassThru",))
REMOTE = {
    "ComputerName": "nestor ps drives this host; for another host run nestor there",
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


def vnic_switch(alias: str, where: str = "") -> str:
    """'vEthernet (VmNat)' -> 'vmnat': the switch whose host adapter Windows names so."""
    match = _VNIC_RE.match(alias)
    if not match:
        raise NotFound(f"'{alias}' is not an adapter nestor ps knows{where}: nestor manages only the host's "
                       "adapters on its switches, named 'vEthernet (SWITCH)'",
                       hint="nestor switch list shows the switches; the host's own interfaces are not nestor's")
    return validate_name(match.group(1).strip().lower(), "switch")


def _targets(cmd: Command, obj: PSObject | None, param: str = "Name") -> list[str]:
    """The VMs a VM cmdlet acts on: its name parameter, or the pipeline object's VM."""
    if obj is None:
        return [cmd.args[param]]
    return [obj.props["VMName"] if "VMName" in obj.props else obj.props["Name"]]


def _is_pattern(value: str) -> bool:
    return bool(_WILDCARDS & set(value))


# -- VMs -----------------------------------------------------------------------------------------
def get_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    pattern = cmd.get("Name")
    if pattern is not None and not _is_pattern(pattern):
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
    for name in _targets(cmd, obj):
        info = s.service.vm_start(name)
        s.note(f"vm '{name}' started (pid {info.pid}, {info.accelerator})")
        out.append(ob.vm(info))
    return out if cmd.get("Passthru") else []


def stop_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in _targets(cmd, obj):
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
    for name in _targets(cmd, obj):
        result = s.service.vm_save(name)
        s.note(f"vm '{name}' saved ({result.size >> 20} MiB state)")
        if cmd.get("Passthru"):
            out.append(ob.vm(s.service.vm_show(name)))
    return out


def remove_vm(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    for name in _targets(cmd, obj):
        s.service.vm_remove(name, force=bool(cmd.get("Force")))
        s.note(f"vm '{name}' removed")
    return []


def update_vmversion(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    for name in _targets(cmd, obj):
        info = s.service.vm_upgrade(name)
        s.note(f"vm '{name}' is at configuration version {info.config_version}")
    return []


# -- processor and memory ----------------------------------------------------------------------
def _check_processor(cmd: Command) -> None:
    if "Count" not in cmd.args and "ExposeVirtualizationExtensions" not in cmd.args:
        raise InvalidInput(f"Set-VMProcessor: nothing to change ({cmd.token.where})",
                           hint="give -ExposeVirtualizationExtensions $true|$false and/or -Count N")


def set_vmprocessor(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in _targets(cmd, obj, "VMName"):
        result = s.service.vm_set_processor(name, count=cmd.get("Count"), nested=cmd.get("ExposeVirtualizationExtensions"))
        for warning in result.warnings:
            s.note(f"warning: {warning}")
        s.note(f"vm '{name}': {result.vm.vcpus} vCPU(s), virtualization extensions "
               f"{'exposed' if result.vm.nested else 'hidden'}")
        if cmd.get("Passthru"):
            out.append(ob.processor(result.vm))
    return out


def get_vmprocessor(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [ob.processor(s.service.vm_show(name)) for name in _targets(cmd, obj, "VMName")]


def _memory_change(cmd: Command) -> MemoryChange:
    return MemoryChange(startup=cmd.get("StartupBytes"), dynamic=cmd.get("DynamicMemoryEnabled"),
                        minimum=cmd.get("MinimumBytes"), maximum=cmd.get("MaximumBytes"), buffer=cmd.get("Buffer"))


def _check_memory(cmd: Command) -> None:
    if _memory_change(cmd).empty():
        raise InvalidInput(f"Set-VMMemory: nothing to change ({cmd.token.where})",
                           hint="give -StartupBytes, -DynamicMemoryEnabled, -MinimumBytes, -MaximumBytes or -Buffer")


def set_vmmemory(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for name in _targets(cmd, obj, "VMName"):
        result = s.service.vm_set_memory(name, _memory_change(cmd))
        s.note(f"vm '{name}': memory {result.outcome.value}")
        if cmd.get("Passthru"):
            out.append(ob.memory(s.service.vm_show(name)))
    return out


def get_vmmemory(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [ob.memory(s.service.vm_show(name)) for name in _targets(cmd, obj, "VMName")]


# -- network adapters --------------------------------------------------------------------------
def get_vmnetworkadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm in _targets(cmd, obj, "VMName"):
        for row in s.service.network.adapter_list(vm):
            if cmd.get("Name") is None or fnmatch.fnmatchcase(row["name"], cmd.args["Name"]):
                out.append(ob.adapter(vm, row))
    if cmd.get("Name") is not None and not _is_pattern(cmd.args["Name"]) and not out:
        raise NotFound(f"vm has no network adapter '{cmd.args['Name']}'", hint="Get-VMNetworkAdapter -VMName VM")
    return out


def set_vmnetworkadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    on = cmd.args["MacAddressSpoofing"] == "On"
    if obj is not None and obj.kind == "adapter":
        pairs = [(str(obj["VMName"]), str(obj["Name"]))]
    else:
        pairs = []
        for vm in _targets(cmd, obj, "VMName"):
            names = [r["name"] for r in s.service.network.adapter_list(vm)
                     if cmd.get("Name") is None or r["name"] == cmd.args["Name"]]
            if not names:
                which = f" '{cmd.args['Name']}'" if cmd.get("Name") else ""
                raise NotFound(f"vm '{vm}' has no network adapter{which}",
                               hint=f"Add-VMNetworkAdapter -VMName {vm} -SwitchName SW (nestor adapter add {vm} --switch SW)")
            pairs += [(vm, n) for n in names]
    out = []
    for vm, name in pairs:
        adapter = s.service.network.adapter_set(vm, name, on)
        s.note(f"adapter '{adapter.name}' of vm '{vm}': mac spoofing {'on' if adapter.mac_spoofing else 'off'}")
        if cmd.get("Passthru"):
            out += [ob.adapter(vm, r) for r in s.service.network.adapter_list(vm) if r["name"] == name]
    return out


def add_vmnetworkadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm in _targets(cmd, obj, "VMName"):
        mac = cmd.get("StaticMacAddress")
        if mac and ":" not in mac and len(mac) == 12:
            mac = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
        adapter = s.service.network.adapter_add(vm, cmd.args["SwitchName"], mac=mac, name=cmd.get("Name"))
        s.note(f"adapter '{adapter.name}' added to vm '{vm}' (switch {adapter.switch}, mac {adapter.mac})")
        if cmd.get("Passthru"):
            out += [ob.adapter(vm, r) for r in s.service.network.adapter_list(vm) if r["name"] == adapter.name]
    return out


# -- switches ----------------------------------------------------------------------------------
def _switch_row(s: Session, name: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = s.service.network.switch_list()
    for row in rows:
        if row["name"] == name:
            return row
    raise NotFound(f"switch '{name}' not found", hint="nestor switch list shows the switches")


def _check_new_switch(cmd: Command) -> None:
    kind, uplink = cmd.get("SwitchType"), cmd.get("NetAdapterName")
    if kind is None and uplink is None:
        raise InvalidInput(f"New-VMSwitch: give -SwitchType Internal|Private, or -NetAdapterName for an "
                           f"external switch ({cmd.token.where})", hint="e.g. New-VMSwitch -Name VmNAT -SwitchType Internal")
    if uplink is not None and kind not in (None, "External"):
        raise InvalidInput(f"New-VMSwitch: -NetAdapterName makes an external switch, not {kind} ({cmd.token.where})",
                           hint="drop -SwitchType, or -NetAdapterName")
    if kind == "External" and uplink is None:
        raise InvalidInput(f"New-VMSwitch: an external switch needs -NetAdapterName ({cmd.token.where})",
                           hint="e.g. -NetAdapterName eth1")


def new_vmswitch(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    uplink = cmd.get("NetAdapterName")
    kind = "external" if uplink else str(cmd.args["SwitchType"]).lower()
    sw = s.service.network.switch_new(cmd.args["Name"], kind, uplink)
    return [ob.switch(_switch_row(s, sw.name))]


def get_vmswitch(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    pattern = cmd.get("Name")
    rows = [r for r in s.service.network.switch_list() if pattern is None or fnmatch.fnmatchcase(r["name"], pattern)]
    if pattern is not None and not _is_pattern(pattern) and not rows:
        raise NotFound(f"switch '{pattern}' not found", hint="nestor switch list shows the switches")
    return [ob.switch(r) for r in rows]


def remove_vmswitch(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    name = cmd.args["Name"] if obj is None else str(obj.props.get("SwitchName") or obj["Name"])
    s.service.network.switch_remove(name)
    dns.forget(s.service.home, name)
    s.note(f"switch '{name}' removed")
    return []


# -- host adapters, addresses, NAT ----------------------------------------------------------------
def get_netadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    alias = cmd.get("Name")
    rows = s.service.network.switch_list()
    if alias is None:
        return [ob.netadapter(r) for r in rows if r["type"] != "private"]
    name = vnic_switch(alias)
    row = next((r for r in rows if r["name"] == name), None)
    if row is None:
        raise NotFound(f"no adapter '{alias}': switch '{name}' not found",
                       hint=f"New-VMSwitch -Name {name} -SwitchType Internal (nestor switch new {name} --type internal)")
    if row["type"] == "private":
        raise NotFound(f"no adapter '{alias}': switch '{name}' is private, so the host has no adapter on it",
                       hint="use an internal switch (nestor switch new NAME --type internal)")
    return [ob.netadapter(row)]


def _check_new_ip(cmd: Command) -> None:
    if "PrefixLength" not in cmd.args:
        raise InvalidInput(f"New-NetIPAddress: give -PrefixLength ({cmd.token.where})", hint="e.g. -PrefixLength 24")
    gateway, address = cmd.get("DefaultGateway"), cmd.args["IPAddress"]
    if gateway is not None and gateway != address:
        # On the host, the switch's own address is the guests' gateway: a different gateway means
        # this line is a guest's configuration, and running it here would move the host away.
        raise InvalidInput(f"New-NetIPAddress: -DefaultGateway {gateway} is not -IPAddress {address}: on the host "
                           f"the switch's address is the guests' gateway ({cmd.token.where})",
                           hint=f"on the host give -IPAddress {gateway} (the gateway the guests use); "
                           "a guest sets its own address and gateway inside the guest")


def new_netipaddress(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    switch = str(obj["SwitchName"]) if obj is not None else vnic_switch(cmd.args["InterfaceAlias"])
    address, length = cmd.args["IPAddress"], cmd.args["PrefixLength"]
    sw = s.service.network.switch_set_ip(switch, f"{address}/{length}")
    s.note(f"switch '{switch}' has address {sw.address}")
    gateway = cmd.get("DefaultGateway")
    if gateway is not None:  # equal to the address (checked when the script was planned)
        s.note(f"note: -DefaultGateway {gateway} is the guests' gateway, the switch's own address; on the host "
               "New-NetIPAddress only sets the address (the host's routes are left as they are)")
    return [ob.ipaddress_obj(str(address), length, switch)]


def _check_new_nat(cmd: Command) -> None:
    if "InternalIPInterfaceAddressPrefix" not in cmd.args:
        raise InvalidInput(f"New-NetNat: give -InternalIPInterfaceAddressPrefix ({cmd.token.where})",
                           hint='e.g. -InternalIPInterfaceAddressPrefix "192.168.100.0/24"')


def new_netnat(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    """WinNAT ties a NAT to a prefix, not a switch: the switch is the internal one whose host
    address is in the prefix. When no switch has one yet (the seed runs New-NetNat before
    New-NetIPAddress), the one internal switch without an address gets the prefix's first
    address, which the seed's New-NetIPAddress then confirms or changes."""
    name: str = cmd.args["Name"]
    prefix: ipaddress.IPv4Network = cmd.args["InternalIPInterfaceAddressPrefix"]
    net = s.service.network
    nats = net.nat_list()
    if any(n["name"] == name for n in nats):
        raise Conflict(f"nat '{name}' already exists", hint="choose another name (nestor nat list)")
    for n in nats:
        if ipaddress.IPv4Network(n["prefix"]).overlaps(prefix):
            raise Conflict(f"prefix {prefix} overlaps nat '{n['name']}' ({n['prefix']})", hint="use another prefix")
    internal = [r for r in net.switch_list() if r["type"] == "internal"]
    inside = [r for r in internal if r["address"] and ipaddress.IPv4Interface(r["address"]).ip in prefix]
    if len(inside) > 1:
        raise Conflict(f"switches {', '.join(r['name'] for r in inside)} all have addresses in {prefix}",
                       hint=f"nestor nat new {name} --switch SW --prefix {prefix}")
    if inside:
        switch = inside[0]["name"]
    else:
        bare = [r for r in internal if not r["address"]]
        if len(bare) != 1:
            what = "no internal switch" if not bare else f"{len(bare)} internal switches ({', '.join(r['name'] for r in bare)})"
            raise NotFound(f"no internal switch has an address in {prefix}, and {what} without an address",
                           hint="give the switch its address first: Get-NetAdapter \"vEthernet (SWITCH)\" | "
                           "New-NetIPAddress -IPAddress A -PrefixLength N")
        switch = bare[0]["name"]
        first = f"{next(prefix.hosts())}/{prefix.prefixlen}"
        net.switch_set_ip(switch, first)
        s.note(f"switch '{switch}' had no address: it gets {first}, the first of {prefix}, as the NAT's gateway "
               "(New-NetIPAddress can change it)")
    nat = net.nat_new(name, switch, str(prefix))
    s.note(f"nat '{nat.name}' created ({nat.prefix} on switch {nat.switch})")
    return [ob.nat(next(r for r in net.nat_list() if r["name"] == nat.name))]


def get_netnat(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    pattern = cmd.get("Name")
    rows = [r for r in s.service.network.nat_list() if pattern is None or fnmatch.fnmatchcase(r["name"], pattern)]
    if pattern is not None and not _is_pattern(pattern) and not rows:
        raise NotFound(f"nat '{pattern}' not found", hint="nestor nat list shows the NATs")
    return [ob.nat(r) for r in rows]


def remove_netnat(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    name = cmd.args["Name"] if obj is None else str(obj["Name"])
    s.service.network.nat_remove(name)
    s.note(f"nat '{name}' removed")
    return []


# -- DNS servers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NetshDns:
    switch: str
    address: ipaddress.IPv4Address
    index: int | None


NETSH_HINT = "nestor ps accepts: netsh interface ip add dnsserver \"vEthernet (SWITCH)\" address=A [index=N]"


def netsh(tokens: list[Token]) -> NetshDns:
    """`netsh interface ip add dnsserver[s] [name=]NAME [address=]A [[index=]N] [[validate=]yes|no]`."""
    words = []
    for t in tokens:
        if t.kind not in (Kind.WORD, Kind.STRING):
            raise InvalidInput(f"netsh: unexpected '{t.text}' ({t.where})", hint=NETSH_HINT)
        words.append(t)
    head = [w.text.lower() for w in words[:4]]
    if (len(head) < 4 or head[0] not in ("interface", "int") or head[1] not in ("ip", "ipv4")
            or head[2] != "add" or head[3] not in ("dnsserver", "dnsservers", "dns")):
        what = " ".join(w.text for w in words[:4]) or "nothing"
        raise InvalidInput(f"netsh {what}: only 'interface ip add dnsserver' is accepted",
                           hint="addresses: New-NetIPAddress (nestor switch set-ip SW ADDR/PREFIX); " + NETSH_HINT)
    keys = ("name", "address", "index", "validate")
    given: dict[str, Token] = {}
    free = list(keys)
    for word in words[4:]:
        key, sep, _value = word.text.partition("=")
        if sep and key.lower() in keys:
            key = key.lower()
            value = word.text[len(key) + 1:]
        elif free:
            key, value = free[0], word.text
        else:
            raise InvalidInput(f"netsh: unexpected '{word.text}' ({word.where})", hint=NETSH_HINT)
        if key in given:
            raise InvalidInput(f"netsh: {key} is given twice ({word.where})", hint=NETSH_HINT)
        if key in free:
            free.remove(key)
        given[key] = Token(word.kind, value, word.line, word.column)
    for key in ("name", "address"):
        if key not in given:
            raise InvalidInput(f"netsh: {key}= is missing", hint=NETSH_HINT)
    if given["address"].text.lower() == "none":
        raise InvalidInput("netsh: address=none is not supported", hint=NETSH_HINT)
    if "validate" in given and given["validate"].text.lower() not in ("yes", "no"):
        raise InvalidInput(f"netsh: validate= must be yes or no ({given['validate'].where})", hint=NETSH_HINT)
    return NetshDns(
        switch=vnic_switch(given["name"].text, f" ({given['name'].where})"),
        address=ipv4(given["address"], "netsh address="),
        index=integer(given["index"], "netsh index=") if "index" in given else None,
    )


def _switch_bridge(s: Session, name: str) -> str:
    row = _switch_row(s, name)
    if row["type"] == "private":
        raise NotFound(f"no adapter 'vEthernet ({name})': switch '{name}' is private, so the host has no adapter on it",
                       hint="use an internal switch")
    return str(row["bridge"])


def _dns_note(s: Session, switch: str, listed: list[str]) -> None:
    nat = next((n for n in s.service.network.nat_list() if n["switch"] == switch), None)
    where = (f"nat '{nat['name']}' hands its DHCP guests the gateway {nat['gateway']} as DNS server"
             if nat and nat["dhcp"] else "guests set their DNS server themselves (no DHCP on this switch)")
    s.note(f"dns servers of 'vEthernet ({switch})': {', '.join(listed)} (recorded by nestor ps; not applied: {where})")


def run_netsh(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    raw: NetshDns = cmd.raw
    listed = dns.add(s.service.home, raw.switch, _switch_bridge(s, raw.switch), raw.address, raw.index)
    _dns_note(s, raw.switch, listed)
    return []


def set_dnsclientserveraddress(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    switch = str(obj["SwitchName"]) if obj is not None else vnic_switch(cmd.args["InterfaceAlias"])
    listed = dns.replace(s.service.home, switch, _switch_bridge(s, switch), [cmd.args["ServerAddresses"]])
    _dns_note(s, switch, listed)
    return []


def get_dnsclientserveraddress(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    alias = cmd.get("InterfaceAlias")
    if obj is not None:
        switches = [str(obj["SwitchName"])]
    elif alias is not None:
        switches = [vnic_switch(alias)]
    else:
        switches = [r["name"] for r in s.service.network.switch_list() if r["type"] != "private"]
    out = []
    for switch in switches:
        bridge = _switch_bridge(s, switch)
        out.append(ob.dns(switch, dns.servers(s.service.home, switch, bridge)))
    return out


# -- formatting ------------------------------------------------------------------------------------
def format_list(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [dataclasses.replace(obj, view="list")] if obj is not None else []


def format_table(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return [dataclasses.replace(obj, view="table")] if obj is not None else []


def out_null(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    return []


# -- the table -----------------------------------------------------------------------------------
def _sig(name: str, native: str, *params: Param, unsupported: dict[str, str] | None = None,
         raw: Callable[[list[Token]], Any] | None = None) -> Signature:
    return Signature(name, params, native, {**REMOTE, **(unsupported or {})}, raw)


NO_DISKS = "nestor VMs boot an image (nestor vm new NAME --image appliance|nested-host); disks come later"

CMDLETS: tuple[Cmdlet, ...] = (
    Cmdlet(_sig("Get-VM", "nestor vm list / nestor vm show NAME",
                Param("Name", name_pattern, aliases=("VMName",), position=0)),
           get_vm, outputs="vm"),
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
           new_vm, outputs="vm"),
    Cmdlet(_sig("Start-VM", "nestor vm start NAME", _vm_param(), PASSTHRU), start_vm, ("vm",), "vm", passthru=True),
    Cmdlet(_sig("Stop-VM", "nestor vm stop NAME [--turn-off]", _vm_param(),
                Param("TurnOff", None), Param("Force", None), Param("Save", None), PASSTHRU),
           stop_vm, ("vm",), "vm", passthru=True),
    Cmdlet(_sig("Save-VM", "nestor vm save NAME", _vm_param(), PASSTHRU), save_vm, ("vm",), "vm", passthru=True),
    Cmdlet(_sig("Remove-VM", "nestor vm remove NAME [--force]", _vm_param(), Param("Force", None)),
           remove_vm, ("vm",)),
    Cmdlet(_sig("Update-VMVersion", "nestor vm upgrade NAME", _vm_param(), Param("Force", None)),
           update_vmversion, ("vm",)),
    Cmdlet(_sig("Set-VMProcessor",
                "nestor vm set-processor NAME [--count N] [--expose-virtualization-extensions on|off]",
                _vm_param("VMName", ()), Param("ExposeVirtualizationExtensions", boolean),
                Param("Count", integer), PASSTHRU,
                unsupported={k: "nestor vm set-processor offers --count and --expose-virtualization-extensions"
                             for k in ("Reserve", "Maximum", "RelativeWeight", "CompatibilityForMigrationEnabled",
                                       "CompatibilityForOlderOperatingSystemsEnabled", "HwThreadCountPerCore",
                                       "EnableHostResourceProtection", "MaximumCountPerNumaNode",
                                       "MaximumCountPerNumaSocket")}),
           set_vmprocessor, ("vm", "processor"), "processor", passthru=True, check=_check_processor),
    Cmdlet(_sig("Get-VMProcessor", "nestor vm show NAME", _vm_param("VMName", ())),
           get_vmprocessor, ("vm",), "processor"),
    Cmdlet(_sig("Set-VMMemory",
                "nestor vm set-memory NAME [--startup SIZE] [--dynamic on|off] [--minimum SIZE] [--maximum SIZE] "
                "[--buffer PCT]",
                _vm_param("VMName", ()), Param("DynamicMemoryEnabled", boolean), Param("StartupBytes", size),
                Param("MinimumBytes", size), Param("MaximumBytes", size), Param("Buffer", integer), PASSTHRU,
                unsupported={k: "nestor vm set-memory offers startup, dynamic, minimum, maximum and buffer"
                             for k in ("Priority", "MaximumAmountPerNumaNodeBytes", "ResourcePoolName")}),
           set_vmmemory, ("vm", "memory"), "memory", passthru=True, check=_check_memory),
    Cmdlet(_sig("Get-VMMemory", "nestor vm show NAME", _vm_param("VMName", ())), get_vmmemory, ("vm",), "memory"),
    Cmdlet(_sig("Get-VMNetworkAdapter", "nestor adapter list VM",
                _vm_param("VMName", ()), Param("Name", name_pattern),
                unsupported={"All": "name the VM: Get-VMNetworkAdapter -VMName VM (nestor adapter list VM)",
                             "ManagementOS": "the host's adapters: Get-NetAdapter \"vEthernet (SWITCH)\""}),
           get_vmnetworkadapter, ("vm",), "adapter"),
    Cmdlet(_sig("Set-VMNetworkAdapter", "nestor adapter set VM [--name A] --mac-spoofing on|off",
                _vm_param("VMName", ()), Param("Name", nestor_name("adapter")),
                Param("MacAddressSpoofing", choice("On", "Off"), required=True), PASSTHRU,
                unsupported={"DhcpGuard": "DHCP guard is not in nestor yet",
                             "RouterGuard": "router guard is not in nestor yet",
                             "StaticMacAddress": "nestor adapter remove VM A, then nestor adapter add VM --mac MAC",
                             "VMNetworkAdapter": "pipe the adapters in: Get-VMNetworkAdapter -VMName VM | Set-VMNetworkAdapter …",
                             "ManagementOS": "the host's adapter has no MAC guard in nestor"}),
           set_vmnetworkadapter, ("vm", "adapter"), "adapter", passthru=True),
    Cmdlet(_sig("Add-VMNetworkAdapter", "nestor adapter add VM --switch SW [--mac MAC] [--name A]",
                _vm_param("VMName", ()), Param("SwitchName", SWITCH_NAME, required=True),
                Param("Name", nestor_name("adapter")), Param("StaticMacAddress", text), PASSTHRU),
           add_vmnetworkadapter, ("vm",), "adapter", passthru=True),
    Cmdlet(_sig("New-VMSwitch", "nestor switch new NAME --type internal|private|external [--uplink IFACE]",
                Param("Name", SWITCH_NAME, position=0, required=True),
                Param("SwitchType", choice("Internal", "Private", "External")),
                Param("NetAdapterName", text), Param("AllowManagementOS", boolean),
                unsupported={"NetAdapterInterfaceDescription": "name the uplink: -NetAdapterName IFACE",
                             "EnableEmbeddedTeaming": "teaming is not in nestor",
                             "EnableIov": "SR-IOV is not in nestor", "MinimumBandwidthMode": "QoS is not in nestor",
                             "EnablePacketDirect": "not in nestor", "Notes": "switches have no notes in nestor"}),
           new_vmswitch, outputs="switch", check=_check_new_switch),
    Cmdlet(_sig("Get-VMSwitch", "nestor switch list", Param("Name", name_pattern, position=0)),
           get_vmswitch, outputs="switch"),
    Cmdlet(_sig("Remove-VMSwitch", "nestor switch remove NAME",
                Param("Name", SWITCH_NAME, position=0, required=True, pipeline=True), Param("Force", None)),
           remove_vmswitch, ("switch",)),
    Cmdlet(_sig("Get-NetAdapter", "nestor switch list",
                Param("Name", text, aliases=("InterfaceAlias", "ifAlias"), position=0),
                unsupported={"InterfaceIndex": "name the adapter: Get-NetAdapter \"vEthernet (SWITCH)\"",
                             "Physical": "nestor manages only the host's adapters on its switches"}),
           get_netadapter, outputs="netadapter"),
    Cmdlet(_sig("New-NetIPAddress", "nestor switch set-ip SWITCH ADDR/PREFIX",
                Param("IPAddress", ipv4, position=0, required=True),
                Param("InterfaceAlias", text, aliases=("ifAlias",), required=True, pipeline=True),
                Param("PrefixLength", prefix_length), Param("DefaultGateway", ipv4),
                Param("AddressFamily", _address_family), Param("Type", choice("Unicast")),
                unsupported={"InterfaceIndex": "name the adapter: -InterfaceAlias \"vEthernet (SWITCH)\"",
                             "SkipAsSource": "not in nestor", "PolicyStore": "addresses are kept in nestor's store",
                             "ValidLifetime": "nestor's addresses do not expire",
                             "PreferredLifetime": "nestor's addresses do not expire"}),
           new_netipaddress, ("netadapter",), "ipaddress", check=_check_new_ip),
    Cmdlet(_sig("New-NetNat", "nestor nat new NAME --switch SW --prefix CIDR",
                Param("Name", NAT_NAME, position=0, required=True),
                Param("InternalIPInterfaceAddressPrefix", ipv4_prefix),
                unsupported={k: "nestor NATs masquerade one internal prefix (nestor nat new … --prefix CIDR)"
                             for k in ("ExternalIPInterfaceAddressPrefix", "InternalRoutingDomainId",
                                       "IcmpQueryTimeout", "TcpEstablishedConnectionTimeout",
                                       "TcpTransientConnectionTimeout", "TcpFilteringBehavior",
                                       "UdpFilteringBehavior", "UdpIdleSessionTimeout", "UdpInboundRefresh",
                                       "Store", "Active")}),
           new_netnat, outputs="nat", check=_check_new_nat),
    Cmdlet(_sig("Get-NetNat", "nestor nat list", Param("Name", name_pattern, position=0)), get_netnat, outputs="nat"),
    Cmdlet(_sig("Remove-NetNat", "nestor nat remove NAME",
                Param("Name", NAT_NAME, position=0, required=True, pipeline=True)),
           remove_netnat, ("nat",)),
    Cmdlet(_sig("Netsh", "(no nestor command: nestor ps keeps the DNS server; see docs/ps.md)", raw=netsh), run_netsh),
    Cmdlet(_sig("Set-DnsClientServerAddress", "(no nestor command: nestor ps keeps the DNS server; see docs/ps.md)",
                Param("InterfaceAlias", text, aliases=("ifAlias",), position=0, required=True, pipeline=True),
                Param("ServerAddresses", ipv4, required=True),
                unsupported={"ResetServerAddresses": "not in nestor ps", "InterfaceIndex": "use -InterfaceAlias"}),
           set_dnsclientserveraddress, ("netadapter",)),
    Cmdlet(_sig("Format-List", "-o json (every property)"), format_list, ("*",), "formatted"),
    Cmdlet(_sig("Format-Table", "(the default view)"), format_table, ("*",), "formatted"),
    Cmdlet(_sig("Out-Null", "(no output)"), out_null, ("*",)),
    Cmdlet(_sig("Get-DnsClientServerAddress", "(nestor ps only; see docs/ps.md)",
                Param("InterfaceAlias", text, aliases=("ifAlias",), position=0, pipeline=True),
                Param("AddressFamily", _address_family)),
           get_dnsclientserveraddress, ("netadapter",), "dns"),
)

BY_NAME = {c.name.lower(): c for c in CMDLETS}
BY_NAME["netsh.exe"] = BY_NAME["netsh"]
BY_NAME["fl"] = BY_NAME["format-list"]
BY_NAME["ft"] = BY_NAME["format-table"]

CHECKPOINTS = "checkpoints are not available in nestor yet"
NOT_OFFERED: dict[str, tuple[str, str]] = {
    # cmdlet: (what is wrong, the hint: the nestor command to use)
    **{c: (CHECKPOINTS, "nestor vm save NAME keeps a running VM's state (Save-VM); nestor vm start NAME resumes it")
       for c in ("checkpoint-vm", "restore-vmcheckpoint", "restore-vmsnapshot", "get-vmcheckpoint", "get-vmsnapshot",
                 "remove-vmcheckpoint", "remove-vmsnapshot", "rename-vmcheckpoint", "export-vmcheckpoint")},
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
        if message == CHECKPOINTS:
            raise InvalidInput(f"{token.text}: {message} ({token.where})", hint=instead)
        raise InvalidInput(f"{token.text}: {message} ({token.where}); the nestor command: {instead}",
                           hint="nestor ps --cmdlets lists the cmdlets nestor ps accepts")
    raise InvalidInput(f"'{token.text}' is not a cmdlet nestor ps accepts ({token.where})",
                       hint="nestor ps --cmdlets lists them with their nestor commands; nestor --help lists the rest")
