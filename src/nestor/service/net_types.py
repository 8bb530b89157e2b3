"""Typed input and output of the network use cases (switches, adapters, NAT), as in types.py.

Addresses are strings: an address on an interface or a network in CIDR form ("10.0.0.1/24",
"10.0.0.0/24"), a single host (a gateway, a leased IP) as a plain address. Kinds and observed
states are enums; counters are numbers; there is no prose. Front ends format these for people
(cli/net.py, nestor ps) or serialise them (API) with :func:`nestor.service.types.to_json`.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

__all__ = [
    "AdapterInfo", "AdapterSpec", "GuardChange", "GuardKind", "Lease", "LinkState", "MovedRoute", "MovedUplink",
    "NatInfo", "NatSpec", "SwitchDetail", "SwitchInfo", "SwitchPort", "SwitchRemoval", "SwitchSpec", "SwitchType",
]


class SwitchType(enum.StrEnum):
    INTERNAL = "internal"  # a bridge the host has an address on (NAT possible)
    PRIVATE = "private"  # VMs only: no host address, no IPv6 on the bridge
    EXTERNAL = "external"  # bridged to an uplink interface


class LinkState(enum.StrEnum):
    """A switch's bridge as observed just now."""

    UP = "up"
    DOWN = "down"
    MISSING = "missing"  # recorded, but the bridge is not there (a namespace or host restart)
    UNKNOWN = "unknown"  # could not look (no privileges)


class GuardKind(enum.StrEnum):
    """What an adapter's guard drops (seed R8 and the router/DHCP guards), one counter each."""

    MAC = "mac"  # frames with another source MAC
    ARP = "arp"  # ARP claiming another MAC
    ND = "nd"  # neighbour discovery claiming another MAC
    VLAN = "vlan"  # tagged frames
    ROUTER = "router"  # router advertisements and redirects
    DHCP = "dhcp"  # DHCP server messages


# -- input ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SwitchSpec:
    """`switch new`: what to create."""

    name: str
    type: SwitchType
    uplink: str | None = None  # external: the interface to enslave
    move_addresses: bool = False  # external: move the uplink's addresses and routes onto the bridge


@dataclass(frozen=True)
class AdapterSpec:
    """`adapter add`: None picks a generated MAC and the next free name (net0, net1, …)."""

    switch: str
    mac: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class GuardChange:
    """`adapter set`: None leaves a guard as it is."""

    mac_spoofing: bool | None = None
    router_guard: bool | None = None
    dhcp_guard: bool | None = None

    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))


@dataclass(frozen=True)
class NatSpec:
    """`nat new`: masquerade PREFIX out of an internal switch (which has its gateway address), or,
    with `host`, a libvirt NAT network on that libvirt host (exactly one of switch and host)."""

    name: str
    switch: str | None
    prefix: str  # CIDR, e.g. 192.168.100.0/24
    dhcp: bool = False
    host: str | None = None


# -- output --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SwitchInfo:
    """A switch as listed: its stored intent plus the bridge's observed state."""

    name: str
    type: SwitchType
    netns: str | None  # None: the root network namespace
    bridge: str
    address: str | None  # the host's ADDR/PREFIX on the bridge
    uplink: str | None
    adapters: int
    nat: str | None
    state: LinkState
    default: bool = False  # the home's default switch (new disk-image VMs get an adapter on it)


@dataclass(frozen=True)
class SwitchPort:
    """A VM's adapter on a switch."""

    vm: str
    adapter: str
    mac: str
    tap: str


@dataclass(frozen=True)
class MovedRoute:
    destination: str  # CIDR; 0.0.0.0/0 or ::/0 for a default route
    gateway: str | None


@dataclass(frozen=True)
class MovedUplink:
    """An external switch's uplink configuration, moved onto the bridge (--move-addresses)."""

    addresses: list[str]  # CIDR
    routes: list[MovedRoute]


@dataclass(frozen=True)
class SwitchDetail:
    """`switch show`: the listed fields with the adapters, the bridge's ports and host addresses."""

    name: str
    type: SwitchType
    netns: str | None
    bridge: str
    address: str | None
    uplink: str | None
    adapters: list[SwitchPort]
    nat: str | None
    state: LinkState
    ports: list[str] | None  # None: could not look
    host_addresses: list[str] | None  # CIDR, as observed on the bridge; None: could not look
    moved_from_uplink: MovedUplink | None = None
    default: bool = False  # the home's default switch


@dataclass(frozen=True)
class SwitchRemoval:
    """`switch remove`: what went with the switch (--force)."""

    name: str
    nat: str | None = None
    adapters: list[SwitchPort] = field(default_factory=list)


@dataclass(frozen=True)
class AdapterInfo:
    """A VM's network adapter, with what its guard dropped (None: not observable now)."""

    vm: str
    name: str
    switch: str
    mac: str
    mac_spoofing: bool
    router_guard: bool
    dhcp_guard: bool
    tap: str
    netns: str | None
    dropped_frames: int | None = None
    dropped_bytes: int | None = None
    dropped: dict[GuardKind, int] | None = None  # frames per guard kind


@dataclass(frozen=True)
class Lease:
    """A DHCP lease of a NAT's dnsmasq."""

    mac: str
    ip: str
    hostname: str  # "*" when the client sent none (dnsmasq's word)


@dataclass(frozen=True)
class NatInfo:
    name: str
    switch: str | None  # None: a libvirt NAT network (on `host`)
    prefix: str  # CIDR
    gateway: str | None  # the switch's address: the VMs' router (and DNS server with DHCP)
    netns: str | None
    dhcp: bool
    dnsmasq_pid: int | None = None  # with dhcp: the running dnsmasq; None: not running
    leases: list[Lease] = field(default_factory=list)
    host: str | None = None  # a libvirt host: the NAT is libvirt's network there
    state: str | None = None  # a libvirt network's state (active | inactive | missing | unknown (why))
    bridge: str | None = None  # a libvirt network's bridge
