"""What one level reports, as pure data (the plan's other input)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SeenAdapter:
    name: str
    switch: str
    mac: str
    mac_spoofing: bool


@dataclass(frozen=True)
class SeenVM:
    name: str
    state: str  # off | running | paused | saved
    vcpus: int
    memory: int
    nested: bool
    image: str | None
    adapters: tuple[SeenAdapter, ...] = ()
    dynamic: bool = False


@dataclass(frozen=True)
class SeenSwitch:
    name: str
    type: str
    address: str | None


@dataclass(frozen=True)
class SeenNat:
    name: str
    switch: str | None
    prefix: str
    dhcp: bool
    leases: tuple[tuple[str, str], ...] = ()  # (mac, ip)


@dataclass(frozen=True)
class Seen:
    """A level's report; `error` set (and the rest empty) when the level did not answer."""

    vms: dict[str, SeenVM] = field(default_factory=dict)
    switches: dict[str, SeenSwitch] = field(default_factory=dict)
    nats: dict[str, SeenNat] = field(default_factory=dict)
    error: str | None = None


def observe(hv: Any, names: set[str] | None = None) -> Seen:
    """Ask a level's handle for its VMs, switches, NATs and (for `names`, or every VM) adapters."""
    switches = {s.name: SeenSwitch(s.name, str(getattr(s.type, "value", s.type)), s.address) for s in hv.switch_list()}
    nats = {n.name: SeenNat(n.name, n.switch, n.prefix, n.dhcp, tuple((lease.mac, lease.ip) for lease in n.leases))
            for n in hv.nat_list()}
    vms: dict[str, SeenVM] = {}
    for vm in hv.vm_list():
        adapters: tuple[SeenAdapter, ...] = ()
        if names is None or vm.name in names:
            adapters = tuple(SeenAdapter(a.name, a.switch, a.mac, a.mac_spoofing) for a in hv.adapter_list(vm.name))
        vms[vm.name] = SeenVM(vm.name, str(getattr(vm.state, "value", vm.state)), vm.vcpus, vm.memory, vm.nested,
                              vm.image, adapters, bool(vm.dynamic_memory))
    return Seen(vms, switches, nats)
