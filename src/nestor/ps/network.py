"""The network cmdlets: VM adapters (R8), switches, the host's vNICs, addresses, NAT (R9) and DNS
servers (netsh), each over the service's network use cases (typed: service/net_types.py)."""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass

from ..errors import Conflict, InvalidInput, NotFound
from ..service.net_types import AdapterSpec, GuardChange, NatSpec, SwitchInfo, SwitchSpec, SwitchType
from . import dns
from . import objects as ob
from .objects import PSObject
from .parse import Command, integer, ipv4
from .session import Session, is_pattern, targets, vnic_switch
from .tokenize import Kind, Token


# -- network adapters --------------------------------------------------------------------------
def get_vmnetworkadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm in targets(cmd, obj, "VMName"):
        for info in s.service.adapter_list(vm):
            if cmd.get("Name") is None or fnmatch.fnmatchcase(info.name, cmd.args["Name"]):
                out.append(ob.adapter(info))
    if cmd.get("Name") is not None and not is_pattern(cmd.args["Name"]) and not out:
        raise NotFound(f"vm has no network adapter '{cmd.args['Name']}'", hint="Get-VMNetworkAdapter -VMName VM")
    return out


def set_vmnetworkadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    on = cmd.args["MacAddressSpoofing"] == "On"
    if obj is not None and obj.kind == "adapter":
        pairs = [(str(obj["VMName"]), str(obj["Name"]))]
    else:
        pairs = []
        for vm in targets(cmd, obj, "VMName"):
            names = [a.name for a in s.service.adapter_list(vm)
                     if cmd.get("Name") is None or a.name == cmd.args["Name"]]
            if not names:
                which = f" '{cmd.args['Name']}'" if cmd.get("Name") else ""
                raise NotFound(f"vm '{vm}' has no network adapter{which}",
                               hint=f"Add-VMNetworkAdapter -VMName {vm} -SwitchName SW (nestor adapter add {vm} --switch SW)")
            pairs += [(vm, n) for n in names]
    out = []
    for vm, name in pairs:
        adapter = s.service.adapter_set(vm, name, GuardChange(mac_spoofing=on))
        s.note(f"adapter '{adapter.name}' of vm '{vm}': mac spoofing {'on' if adapter.mac_spoofing else 'off'}")
        if cmd.get("Passthru"):
            out.append(ob.adapter(adapter))
    return out


def add_vmnetworkadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    out = []
    for vm in targets(cmd, obj, "VMName"):
        mac = cmd.get("StaticMacAddress")
        if mac and ":" not in mac and len(mac) == 12:
            mac = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
        adapter = s.service.adapter_add(vm, AdapterSpec(cmd.args["SwitchName"], mac=mac, name=cmd.get("Name")))
        s.note(f"adapter '{adapter.name}' added to vm '{vm}' (switch {adapter.switch}, mac {adapter.mac})")
        if cmd.get("Passthru"):
            out.append(ob.adapter(adapter))
    return out


# -- switches ----------------------------------------------------------------------------------
def _switch(s: Session, name: str) -> SwitchInfo:
    for info in s.service.switch_list():
        if info.name == name:
            return info
    raise NotFound(f"switch '{name}' not found", hint="nestor switch list shows the switches")


def check_new_switch(cmd: Command) -> None:
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
    return [ob.switch(s.service.switch_new(SwitchSpec(cmd.args["Name"], SwitchType(kind), uplink)))]


def get_vmswitch(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    pattern = cmd.get("Name")
    found = [i for i in s.service.switch_list() if pattern is None or fnmatch.fnmatchcase(i.name, pattern)]
    if pattern is not None and not is_pattern(pattern) and not found:
        raise NotFound(f"switch '{pattern}' not found", hint="nestor switch list shows the switches")
    return [ob.switch(i) for i in found]


def remove_vmswitch(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    name = cmd.args["Name"] if obj is None else str(obj.props.get("SwitchName") or obj["Name"])
    s.service.switch_remove(name)
    if not s.level:  # the DNS servers nestor ps keeps are this host's
        dns.forget(s.local.home, name)
    s.note(f"switch '{name}' removed")
    return []


# -- host adapters, addresses, NAT ----------------------------------------------------------------
def get_netadapter(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    alias = cmd.get("Name")
    switches = s.service.switch_list()
    if alias is None:
        return [ob.netadapter(i) for i in switches if i.type is not SwitchType.PRIVATE]
    name = vnic_switch(alias)
    info = next((i for i in switches if i.name == name), None)
    if info is None:
        raise NotFound(f"no adapter '{alias}': switch '{name}' not found",
                       hint=f"New-VMSwitch -Name {name} -SwitchType Internal (nestor switch new {name} --type internal)")
    if info.type is SwitchType.PRIVATE:
        raise NotFound(f"no adapter '{alias}': switch '{name}' is private, so the host has no adapter on it",
                       hint="use an internal switch (nestor switch new NAME --type internal)")
    return [ob.netadapter(info)]


def check_new_ip(cmd: Command) -> None:
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
    sw = s.service.switch_set_ip(switch, f"{address}/{length}")
    s.note(f"switch '{switch}' has address {sw.address}")
    gateway = cmd.get("DefaultGateway")
    if gateway is not None:  # equal to the address (checked when the script was planned)
        s.note(f"note: -DefaultGateway {gateway} is the guests' gateway, the switch's own address; on the host "
               "New-NetIPAddress only sets the address (the host's routes are left as they are)")
    return [ob.ipaddress_obj(str(address), length, switch)]


def check_new_nat(cmd: Command) -> None:
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
    service = s.service
    nats = service.nat_list()
    if any(n.name == name for n in nats):
        raise Conflict(f"nat '{name}' already exists", hint="choose another name (nestor nat list)")
    for n in nats:
        if ipaddress.IPv4Network(n.prefix).overlaps(prefix):
            raise Conflict(f"prefix {prefix} overlaps nat '{n.name}' ({n.prefix})", hint="use another prefix")
    internal = [i for i in service.switch_list() if i.type is SwitchType.INTERNAL]
    inside = [i for i in internal if i.address and ipaddress.IPv4Interface(i.address).ip in prefix]
    if len(inside) > 1:
        raise Conflict(f"switches {', '.join(i.name for i in inside)} all have addresses in {prefix}",
                       hint=f"nestor nat new {name} --switch SW --prefix {prefix}")
    if inside:
        switch = inside[0].name
    else:
        bare = [i for i in internal if not i.address]
        if len(bare) != 1:
            what = "no internal switch" if not bare else f"{len(bare)} internal switches ({', '.join(i.name for i in bare)})"
            raise NotFound(f"no internal switch has an address in {prefix}, and {what} without an address",
                           hint="give the switch its address first: Get-NetAdapter \"vEthernet (SWITCH)\" | "
                           "New-NetIPAddress -IPAddress A -PrefixLength N")
        switch = bare[0].name
        first = f"{next(prefix.hosts())}/{prefix.prefixlen}"
        service.switch_set_ip(switch, first)
        s.note(f"switch '{switch}' had no address: it gets {first}, the first of {prefix}, as the NAT's gateway "
               "(New-NetIPAddress can change it)")
    nat = service.nat_new(NatSpec(name, switch, str(prefix)))
    s.note(f"nat '{nat.name}' created ({nat.prefix} on switch {nat.switch})")
    return [ob.nat(nat)]


def get_netnat(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    pattern = cmd.get("Name")
    found = [n for n in s.service.nat_list() if pattern is None or fnmatch.fnmatchcase(n.name, pattern)]
    if pattern is not None and not is_pattern(pattern) and not found:
        raise NotFound(f"nat '{pattern}' not found", hint="nestor nat list shows the NATs")
    return [ob.nat(n) for n in found]


def remove_netnat(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    name = cmd.args["Name"] if obj is None else str(obj["Name"])
    s.service.nat_remove(name)
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
    info = _switch(s, name)
    if info.type is SwitchType.PRIVATE:
        raise NotFound(f"no adapter 'vEthernet ({name})': switch '{name}' is private, so the host has no adapter on it",
                       hint="use an internal switch")
    return info.bridge


def _dns_note(s: Session, switch: str, listed: list[str]) -> None:
    nat = next((n for n in s.service.nat_list() if n.switch == switch), None)
    where = (f"nat '{nat.name}' hands its DHCP guests the gateway {nat.gateway} as DNS server"
             if nat and nat.dhcp else "guests set their DNS server themselves (no DHCP on this switch)")
    s.note(f"dns servers of 'vEthernet ({switch})': {', '.join(listed)} (recorded by nestor ps; not applied: {where})")


def run_netsh(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    raw: NetshDns = cmd.raw
    s.only_here("netsh")
    listed = dns.add(s.local.home, raw.switch, _switch_bridge(s, raw.switch), raw.address, raw.index)
    _dns_note(s, raw.switch, listed)
    return []


def set_dnsclientserveraddress(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    s.only_here(cmd.name)
    switch = str(obj["SwitchName"]) if obj is not None else vnic_switch(cmd.args["InterfaceAlias"])
    listed = dns.replace(s.local.home, switch, _switch_bridge(s, switch), [cmd.args["ServerAddresses"]])
    _dns_note(s, switch, listed)
    return []


def get_dnsclientserveraddress(s: Session, cmd: Command, obj: PSObject | None) -> list[PSObject]:
    s.only_here(cmd.name)
    alias = cmd.get("InterfaceAlias")
    if obj is not None:
        switches = [str(obj["SwitchName"])]
    elif alias is not None:
        switches = [vnic_switch(alias)]
    else:
        switches = [i.name for i in s.service.switch_list() if i.type is not SwitchType.PRIVATE]
    out = []
    for switch in switches:
        bridge = _switch_bridge(s, switch)
        out.append(ob.dns(switch, dns.servers(s.local.home, switch, bridge)))
    return out
