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
    dhcp_running: bool | None = None  # with dhcp on this machine's switch: does its dnsmasq run? None: not known


@dataclass(frozen=True)
class Seen:
    """A level's report; `error` set (and the rest empty) when the level did not answer."""

    vms: dict[str, SeenVM] = field(default_factory=dict)
    switches: dict[str, SeenSwitch] = field(default_factory=dict)
    nats: dict[str, SeenNat] = field(default_factory=dict)
    error: str | None = None


def observe(hv: Any, names: set[str] | None = None) -> Seen:
    """A level's VMs, switches, NATs and adapters: one request (level_report); from a nestor
    without that route, its four lists (adapters for `names`, or every VM)."""
    from ..errors import NotFound

    try:
        report = hv.level_report()
    except NotFound as exc:
        if not exc.message.startswith(f"GET /v1{NO_ROUTE_PATH}:"):  # a level's own "not found" (its VM went)
            raise
        return observe_lists(hv, names)
    return seen_of(report)


NO_ROUTE_PATH = "/level"  # an older nestor answers "GET /v1/level: Not Found" (api/app.py's envelope)


def seen_of(report: Any) -> Seen:
    """A level report (nestor.lab.types.LevelReport) as the plan's data."""
    adapters: dict[str, list[SeenAdapter]] = {}
    for a in report.adapters:
        adapters.setdefault(a.vm, []).append(SeenAdapter(a.name, a.switch, a.mac, a.mac_spoofing))
    return Seen({vm.name: _vm(vm, tuple(adapters.get(vm.name, ()))) for vm in report.vms},
                {s.name: SeenSwitch(s.name, str(getattr(s.type, "value", s.type)), s.address) for s in report.switches},
                {n.name: _nat(n) for n in report.nats})


def observe_lists(hv: Any, names: set[str] | None = None) -> Seen:
    """The same from a level's four lists (`nat list` also makes its NATs real again)."""
    switches = {s.name: SeenSwitch(s.name, str(getattr(s.type, "value", s.type)), s.address) for s in hv.switch_list()}
    nats = {n.name: _nat(n) for n in hv.nat_list()}
    vms: dict[str, SeenVM] = {}
    for vm in hv.vm_list():
        adapters: tuple[SeenAdapter, ...] = ()
        if names is None or vm.name in names:
            adapters = tuple(SeenAdapter(a.name, a.switch, a.mac, a.mac_spoofing) for a in hv.adapter_list(vm.name))
        vms[vm.name] = _vm(vm, adapters)
    return Seen(vms, switches, nats)


def _vm(vm: Any, adapters: tuple[SeenAdapter, ...]) -> SeenVM:
    return SeenVM(vm.name, str(getattr(vm.state, "value", vm.state)), vm.vcpus, vm.memory, vm.nested, vm.image,
                  adapters, bool(vm.dynamic_memory))


def _nat(n: Any) -> SeenNat:
    running = None if not n.dhcp or n.switch is None else n.dnsmasq_pid is not None
    return SeenNat(n.name, n.switch, n.prefix, n.dhcp, tuple((lease.mac, lease.ip) for lease in n.leases), running)
