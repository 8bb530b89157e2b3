"""The diff of a lab file against what each level reports: per level, what to create, change,
replace, start, remove or keep, and why (like `terraform plan`). Pure: no handle, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..model import format_size
from .observe import Seen, SeenVM
from .spec import Lab, Level, VMDef, level_name

Owned = set[tuple[str, str, str]]  # (level path, kind, name) this lab made


class Op(enum.StrEnum):
    CREATE = "create"
    CHANGE = "change"  # in place (a VM: stopped, changed, started again)
    REPLACE = "replace"  # removed and created again (what cannot change in place)
    START = "start"
    REMOVE = "remove"
    KEEP = "keep"


SYMBOL = {Op.CREATE: "+", Op.CHANGE: "~", Op.REPLACE: "-/+", Op.START: ">", Op.REMOVE: "-", Op.KEEP: "="}


@dataclass(frozen=True)
class Action:
    level: str  # "" = L0
    kind: str  # switch | nat | vm | adapter
    name: str  # adapter: "VM/INDEX"
    op: Op
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "level_name": level_name(self.level), "kind": self.kind, "name": self.name,
                "op": self.op.value, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    lab: str
    actions: list[Action]
    foreign: list[str] = field(default_factory=list)  # objects of the file that exist but are not this lab's

    @property
    def changes(self) -> list[Action]:
        return [a for a in self.actions if a.op is not Op.KEEP]

    def at(self, level: str) -> list[Action]:
        return [a for a in self.actions if a.level == level]

    def to_json(self) -> dict[str, Any]:
        counts = {op.value: sum(1 for a in self.actions if a.op is op) for op in Op}
        return {"lab": self.lab, "changes": len(self.changes), "counts": counts,
                "actions": [a.to_json() for a in self.actions], "foreign": self.foreign}


def plan(lab: Lab, seen: dict[str, Seen | None], owned: Owned) -> Plan:
    """`seen[path]` is a level's report, or None when the level is not there to ask (its VM is
    created or started by this run). `owned` is what this lab made, at every level."""
    actions: list[Action] = []
    foreign: list[str] = []
    fresh: dict[str, str] = {}  # level path -> why it has no report
    for level in lab.levels():
        report = seen.get(level.path)
        why = fresh.get(level.path)
        if report is None or why is not None:
            _all_new(level, why or "the level does not answer yet: planned again once it runs", actions, fresh)
            continue
        _diff(level, report, owned, actions, foreign, fresh)
    _removed_levels(lab, owned, actions)
    return Plan(lab.name, actions, foreign)


def plan_level(level: Level, seen: Seen, owned: Owned) -> Plan:
    """The actions of one level, from its own report (what `lab up` runs at each level it reaches)."""
    actions: list[Action] = []
    foreign: list[str] = []
    _diff(level, seen, owned, actions, foreign, {})
    return Plan("", actions, foreign)


def _all_new(level: Level, why: str, actions: list[Action], fresh: dict[str, str]) -> None:
    for s in level.switches.values():
        actions.append(Action(level.path, "switch", s.name, Op.CREATE, why))
    for n in level.nats.values():
        actions.append(Action(level.path, "nat", n.name, Op.CREATE, why))
    for vm in level.vms.values():
        actions.append(Action(level.path, "vm", vm.name, Op.CREATE, why))
        if vm.inner is not None:
            fresh[vm.inner.path] = f"inside {level.vm_path(vm.name)}, which this run creates"


def _diff(level: Level, seen: Seen, owned: Owned, actions: list[Action], foreign: list[str],
          fresh: dict[str, str]) -> None:
    here = level.path
    where = level_name(here)

    def mine(kind: str, name: str) -> bool:
        return (here, kind, name) in owned

    for s in level.switches.values():
        got = seen.switches.get(s.name)
        if got is None:
            actions.append(Action(here, "switch", s.name, Op.CREATE, f"no switch '{s.name}' at {where}"))
        elif not mine("switch", s.name):
            foreign.append(f"switch '{s.name}' at {where}")
        elif got.type != s.type:
            actions.append(Action(here, "switch", s.name, Op.REPLACE, f"type {got.type} → {s.type}"))
        elif got.address != s.address:
            actions.append(Action(here, "switch", s.name, Op.CHANGE, f"address {got.address or 'none'} → {s.address or 'none'}"))
        else:
            actions.append(Action(here, "switch", s.name, Op.KEEP, "as in the file"))
    for n in level.nats.values():
        got_nat = seen.nats.get(n.name)
        if got_nat is None:
            actions.append(Action(here, "nat", n.name, Op.CREATE, f"no NAT '{n.name}' at {where}"))
        elif not mine("nat", n.name):
            foreign.append(f"nat '{n.name}' at {where}")
        elif (got_nat.switch, got_nat.prefix, got_nat.dhcp) != (n.switch, n.prefix, n.dhcp):
            actions.append(Action(here, "nat", n.name, Op.REPLACE,
                                  f"{got_nat.switch} {got_nat.prefix} dhcp={got_nat.dhcp} → {n.switch} {n.prefix} dhcp={n.dhcp}"))
        elif got_nat.dhcp_running is False:
            actions.append(Action(here, "nat", n.name, Op.CHANGE, "its DHCP server (dnsmasq) is not running: started again"))
        else:
            actions.append(Action(here, "nat", n.name, Op.KEEP, "as in the file"))
    for vm in level.vms.values():
        got_vm = seen.vms.get(vm.name)
        inner = vm.inner.path if vm.inner is not None else None
        if got_vm is None:
            actions.append(Action(here, "vm", vm.name, Op.CREATE, f"no VM '{vm.name}' at {where}"))
            if inner is not None:
                fresh[inner] = f"inside {level.vm_path(vm.name)}, which this run creates"
            continue
        if not mine("vm", vm.name):
            foreign.append(f"vm '{vm.name}' at {where}")
            if inner is not None:
                fresh[inner] = f"inside {level.vm_path(vm.name)}, which is not this lab's"
            continue
        _diff_vm(level, vm, got_vm, actions, fresh)
    listed: list[tuple[str, set[str], set[str]]] = [("vm", set(seen.vms), set(level.vms)),
                                                    ("nat", set(seen.nats), set(level.nats)),
                                                    ("switch", set(seen.switches), set(level.switches))]
    for kind, present, wanted in listed:
        for name in sorted(present):
            if name not in wanted and mine(kind, name):
                extra = " (with everything inside it)" if kind == "vm" else ""
                actions.append(Action(here, kind, name, Op.REMOVE, f"this lab made it and the file no longer has it{extra}"))


def _diff_vm(level: Level, vm: VMDef, got: SeenVM, actions: list[Action], fresh: dict[str, str]) -> None:
    here = level.path
    path = level.vm_path(vm.name)
    if (got.image or "appliance") != vm.image:
        actions.append(Action(here, "vm", vm.name, Op.REPLACE, f"image {got.image} → {vm.image}"))
        if vm.inner is not None:
            fresh[vm.inner.path] = f"inside {path}, which this run replaces"
        return
    differences = []
    if got.vcpus != vm.cpus:
        differences.append(f"cpus {got.vcpus} → {vm.cpus}")
    if got.nested != vm.nested:
        differences.append(f"nested {'on' if got.nested else 'off'} → {'on' if vm.nested else 'off'}")
    if got.memory != vm.memory:
        differences.append(f"memory {format_size(got.memory)} → {format_size(vm.memory)}")
    if got.dynamic != (vm.dynamic is not None):
        differences.append(f"dynamic memory {'on' if got.dynamic else 'off'} → {'on' if vm.dynamic else 'off'}")
    running = got.state == "running"
    if differences:
        stops = "; stops and starts it (R2: only while off)" if got.state != "off" else ""
        actions.append(Action(here, "vm", vm.name, Op.CHANGE, ", ".join(differences) + stops))
    elif not running:
        actions.append(Action(here, "vm", vm.name, Op.START, f"it is {got.state}"))
    else:
        actions.append(Action(here, "vm", vm.name, Op.KEEP, "running, as in the file"))
    if vm.inner is not None and (differences or not running):
        fresh[vm.inner.path] = f"inside {path}, which is {'changed' if differences else got.state}: planned again once it runs"
    for index, want in enumerate(vm.adapters):
        name = f"{vm.name}/{index}"
        have = got.adapters[index] if index < len(got.adapters) else None
        if have is None:
            actions.append(Action(here, "adapter", name, Op.CREATE, f"on switch {want.switch}"))
        elif have.switch != want.switch or (want.mac is not None and have.mac != want.mac):
            actions.append(Action(here, "adapter", name, Op.REPLACE, f"switch {have.switch} → {want.switch}"
                                  if have.switch != want.switch else f"mac {have.mac} → {want.mac}"))
        elif have.mac_spoofing != want.mac_spoofing:
            change = f"mac spoofing {_onoff(have.mac_spoofing)} → {_onoff(want.mac_spoofing)}"
            actions.append(Action(here, "adapter", name, Op.CHANGE, change))
        else:
            actions.append(Action(here, "adapter", name, Op.KEEP, f"on switch {want.switch}"))
    for index in range(len(vm.adapters), len(got.adapters)):
        actions.append(Action(here, "adapter", f"{vm.name}/{index}", Op.REMOVE,
                              f"adapter {got.adapters[index].name} is not in the file"))


def _onoff(value: bool) -> str:
    return "on" if value else "off"


def _removed_levels(lab: Lab, owned: Owned, actions: list[Action]) -> None:
    """Owned objects at a level the file no longer has, whose VM is not removed with them either
    (the VM stays, its level lost its content): removed."""
    paths = {level.path for level in lab.levels()}
    removed_vms = {f"{a.level}/{a.name}" if a.level else a.name for a in actions if a.kind == "vm" and a.op is Op.REMOVE}
    for level, kind, name in sorted(owned):
        if level in paths or any(level == v or level.startswith(v + "/") for v in removed_vms):
            continue
        if any(level.startswith(p + "/") or level == p for p in removed_vms):
            continue
        parent_vm_is_lab = level.rpartition("/")[0] in paths
        if parent_vm_is_lab:
            actions.append(Action(level, kind, name, Op.REMOVE, "this lab made it and the file no longer has it"))
