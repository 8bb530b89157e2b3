"""The objects that flow through `nestor ps` pipelines, and how they are shown.

Each object has a PowerShell type name, a *kind* that pipeline binding looks at (``vm``,
``adapter``, ``netadapter`` …) and its properties under PowerShell's names (sizes in bytes, as
PowerShell keeps them). ``-o json`` prints the properties; the table shows the columns of its
type, as PowerShell's default formatting does (``MemoryStartup(M)`` in MiB, states as words).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..model import VMState
from ..service.guest_types import CheckpointInfo
from ..service.net_types import AdapterInfo, LinkState, NatInfo, SwitchInfo
from ..service.types import VMInfo

Column = tuple[str, Callable[[dict[str, Any]], Any]]


@dataclass(frozen=True)
class PSObject:
    kind: str  # vm | processor | memory | adapter | switch | netadapter | nat | ipaddress | dns | checkpoint | security
    type_name: str  # PowerShell's type, e.g. VirtualMachine
    props: dict[str, Any]
    view: str = "table"  # table | list (Format-List: every property, one per line)

    def __getitem__(self, key: str) -> Any:
        return self.props[key]


STATE_NAMES = {VMState.OFF: "Off", VMState.RUNNING: "Running", VMState.PAUSED: "Paused", VMState.SAVED: "Saved"}


def _mib(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda p: None if p.get(key) is None else p[key] >> 20


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "00:00:00"
    total = int(seconds)
    days, rest = divmod(total, 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}.{text}" if days else text


def vm(info: VMInfo) -> PSObject:
    return PSObject("vm", "VirtualMachine", {
        "Name": info.name, "State": STATE_NAMES.get(info.state, str(info.state)),
        "ProcessorCount": info.vcpus, "MemoryStartup": info.memory,
        "MemoryAssigned": info.memory_assigned if info.memory_assigned is not None
        else (info.memory if info.state is VMState.RUNNING else 0),
        "DynamicMemoryEnabled": info.dynamic_memory, "MemoryMinimum": info.memory_minimum,
        "MemoryMaximum": info.memory_maximum, "Uptime": _uptime(info.uptime), "Version": info.config_version,
        "ExposeVirtualizationExtensions": info.nested, "HypervisorRunning": info.hypervisor_running,
        "Generation": 1,
    })


def processor(info: VMInfo) -> PSObject:
    return PSObject("processor", "VMProcessor", {
        "VMName": info.name, "Count": info.vcpus, "ExposeVirtualizationExtensions": info.nested,
        "HypervisorRunning": info.hypervisor_running,
        "EnableHyperVEnlightenments": info.enlightenments == "hyperv",
    })


def security(info: VMInfo) -> PSObject:
    return PSObject("security", "VMSecurity", {"VMName": info.name, "TpmEnabled": info.tpm, "Shielded": False})


def memory(info: VMInfo) -> PSObject:
    return PSObject("memory", "VMMemory", {
        "VMName": info.name, "DynamicMemoryEnabled": info.dynamic_memory, "Startup": info.memory,
        "Minimum": info.memory_minimum, "Maximum": info.memory_maximum, "Buffer": info.memory_buffer,
    })


def adapter(info: AdapterInfo) -> PSObject:
    return PSObject("adapter", "VMNetworkAdapter", {
        "Name": info.name, "VMName": info.vm, "SwitchName": info.switch,
        "MacAddress": info.mac.replace(":", "").upper(),
        "MacAddressSpoofing": "On" if info.mac_spoofing else "Off",
        "DroppedFrames": info.dropped_frames,
    })


def switch(info: SwitchInfo) -> PSObject:
    return PSObject("switch", "VMSwitch", {
        "Name": info.name, "SwitchType": info.type.value.capitalize(), "NetAdapterName": info.uplink,
        "Address": info.address, "Nat": info.nat, "State": info.state.value,
    })


def vnic_name(switch_name: str) -> str:
    """What Windows calls the host's adapter on a Hyper-V switch."""
    return f"vEthernet ({switch_name})"


NETADAPTER_STATUS = {LinkState.UP: "Up", LinkState.DOWN: "Disconnected", LinkState.MISSING: "Not Present",
                     LinkState.UNKNOWN: "Unknown"}


def netadapter(info: SwitchInfo) -> PSObject:
    return PSObject("netadapter", "NetAdapter", {
        "Name": vnic_name(info.name), "InterfaceDescription": "Hyper-V Virtual Ethernet Adapter",
        "Status": NETADAPTER_STATUS[info.state], "SwitchName": info.name, "Address": info.address,
    })


def nat(info: NatInfo) -> PSObject:
    return PSObject("nat", "NetNat", {
        "Name": info.name, "InternalIPInterfaceAddressPrefix": info.prefix, "Active": True,
        "SwitchName": info.switch, "Gateway": info.gateway,
    })


def ipaddress_obj(address: str, prefix_length: int, switch_name: str) -> PSObject:
    return PSObject("ipaddress", "NetIPAddress", {
        "IPAddress": address, "InterfaceAlias": vnic_name(switch_name), "AddressFamily": "IPv4",
        "PrefixLength": prefix_length, "SwitchName": switch_name,
    })


def dns(switch_name: str, servers: Sequence[str]) -> PSObject:
    return PSObject("dns", "DnsClientServerAddress", {
        "InterfaceAlias": vnic_name(switch_name), "AddressFamily": "IPv4", "ServerAddresses": list(servers),
        "SwitchName": switch_name,
    })


def checkpoint(vm_name: str, info: CheckpointInfo) -> PSObject:
    """Hyper-V's VMCheckpoint: a Standard checkpoint holds the memory of a running VM, as nestor's do."""
    return PSObject("checkpoint", "VMCheckpoint", {
        "VMName": vm_name, "Name": info.name, "SnapshotType": "Standard",
        "CreationTime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created)),
        "Created": info.created, "Memory": info.memory, "MemorySize": info.memory_size,
    })


def _yes(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda p: p.get(key)


COLUMNS: dict[str, list[Column]] = {
    "vm": [("Name", _yes("Name")), ("State", _yes("State")), ("CPUs", _yes("ProcessorCount")),
           ("MemoryStartup(M)", _mib("MemoryStartup")), ("MemoryAssigned(M)", _mib("MemoryAssigned")),
           ("Uptime", _yes("Uptime")), ("Version", _yes("Version")),
           ("Nested", _yes("ExposeVirtualizationExtensions"))],
    "processor": [("VMName", _yes("VMName")), ("Count", _yes("Count")),
                  ("ExposeVirtualizationExtensions", _yes("ExposeVirtualizationExtensions")),
                  ("HypervisorRunning", _yes("HypervisorRunning"))],
    "security": [("VMName", _yes("VMName")), ("TpmEnabled", _yes("TpmEnabled")), ("Shielded", _yes("Shielded"))],
    "memory": [("VMName", _yes("VMName")), ("DynamicMemoryEnabled", _yes("DynamicMemoryEnabled")),
               ("Minimum(M)", _mib("Minimum")), ("Startup(M)", _mib("Startup")), ("Maximum(M)", _mib("Maximum")),
               ("Buffer", _yes("Buffer"))],
    "adapter": [("Name", _yes("Name")), ("VMName", _yes("VMName")), ("SwitchName", _yes("SwitchName")),
                ("MacAddress", _yes("MacAddress")), ("MacAddressSpoofing", _yes("MacAddressSpoofing"))],
    "switch": [("Name", _yes("Name")), ("SwitchType", _yes("SwitchType")), ("NetAdapterName", _yes("NetAdapterName")),
               ("Address", _yes("Address")), ("Nat", _yes("Nat"))],
    "netadapter": [("Name", _yes("Name")), ("InterfaceDescription", _yes("InterfaceDescription")),
                   ("Status", _yes("Status")), ("Address", _yes("Address"))],
    "nat": [("Name", _yes("Name")), ("InternalIPInterfaceAddressPrefix", _yes("InternalIPInterfaceAddressPrefix")),
            ("Active", _yes("Active")), ("SwitchName", _yes("SwitchName"))],
    "ipaddress": [("IPAddress", _yes("IPAddress")), ("InterfaceAlias", _yes("InterfaceAlias")),
                  ("AddressFamily", _yes("AddressFamily")), ("PrefixLength", _yes("PrefixLength"))],
    "checkpoint": [("VMName", _yes("VMName")), ("Name", _yes("Name")), ("SnapshotType", _yes("SnapshotType")),
                   ("CreationTime", _yes("CreationTime")), ("Memory", _yes("Memory"))],
    "dns": [("InterfaceAlias", _yes("InterfaceAlias")), ("AddressFamily", _yes("AddressFamily")),
            ("ServerAddresses", lambda p: "{" + ", ".join(p["ServerAddresses"]) + "}")],
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def render(objects: Sequence[PSObject]) -> str:
    """PowerShell's default table: one per run of objects of the same type, headers underlined."""
    blocks: list[str] = []
    i = 0
    while i < len(objects):
        kind, view = objects[i].kind, objects[i].view
        run = []
        while i < len(objects) and (objects[i].kind, objects[i].view) == (kind, view):
            run.append(objects[i])
            i += 1
        if view == "list":
            blocks += [_list(o) for o in run]
            continue
        columns = COLUMNS[kind]
        cells = [[_cell(get(o.props)) for _, get in columns] for o in run]
        widths = [max(len(h), *(len(row[c]) for row in cells)) for c, (h, _) in enumerate(columns)]
        lines = [" ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip(),
                 " ".join(("-" * len(h)).ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip()]
        lines += [" ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _list(obj: PSObject) -> str:
    width = max(len(k) for k in obj.props)
    return "\n".join(f"{k.ljust(width)} : {_cell(v)}" for k, v in obj.props.items())


def to_json(objects: Sequence[PSObject]) -> list[dict[str, Any]]:
    return [{"Type": o.type_name, **o.props} for o in objects]
