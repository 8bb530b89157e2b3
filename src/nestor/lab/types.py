"""The typed results of the lab use cases, the same from the Service and the Client (nestor.hypervisor).

Their JSON (service.types.to_json) is what `nestor lab … -o json` prints and what the API answers.
Imported only where a lab is used (an L1's daemon starts under TCG, where each dataclass costs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..service.net_types import NatInfo
from ..service.types import VMInfo


@dataclass(frozen=True)
class LabAction:
    """One line of a plan: what happens to one object of one level, and why."""

    level: str  # "" = L0, "hv1" = inside VM hv1
    level_name: str  # L0, L1 (in hv1), ...
    kind: str  # switch | nat | vm | adapter
    name: str
    op: str  # create | change | replace | start | remove | keep
    reason: str


@dataclass(frozen=True)
class LabProblem:
    """A preflight refusal: the blocking object, the rule and the fix."""

    subject: str
    rule: str  # nesting | memory | vcpus | collision | ownership
    message: str
    fix: str


@dataclass(frozen=True)
class LabPlan:
    """What `lab up` would do; `problems` non-empty: it would refuse (and create nothing)."""

    lab: str
    changes: int
    counts: dict[str, int]
    actions: list[LabAction]
    foreign: list[str] = field(default_factory=list)
    problems: list[LabProblem] = field(default_factory=list)


@dataclass(frozen=True)
class LabUp:
    """What `lab up` did; `failed` non-empty: some objects failed (what was made is kept; `lab up` again converges)."""

    lab: str
    changes: int
    done: list[LabAction]
    failed: list[str]
    up_to_date: bool = False  # nothing to do: every level was as in the file


@dataclass(frozen=True)
class LabInfo:
    name: str
    file: str | None  # where the lab file was read (a path on the caller's machine; never opened by the API)
    netns: str | None
    objects: int


@dataclass(frozen=True)
class LabSwitchStatus:
    name: str
    type: str
    address: str | None
    state: str  # present | missing | unknown


@dataclass(frozen=True)
class LabNatStatus:
    name: str
    switch: str
    prefix: str
    dhcp: bool
    state: str


@dataclass(frozen=True)
class LabVMStatus:
    name: str
    path: str  # hv1/web
    image: str
    state: str  # a VM state, or missing | unknown
    cpus: int
    memory: int
    nested: bool
    addresses: list[str]


@dataclass(frozen=True)
class LabLevelStatus:
    level: str
    level_name: str
    reachable: bool
    error: str | None
    switches: list[LabSwitchStatus]
    nats: list[LabNatStatus]
    vms: list[LabVMStatus]


@dataclass(frozen=True)
class LabStatus:
    """The lab's tree, level by level, with each object's state."""

    lab: str
    levels: list[LabLevelStatus]


@dataclass(frozen=True)
class LabHost:
    path: str
    addresses: list[str]
    image: str


@dataclass(frozen=True)
class LabInventory:
    """The lab's VMs and addresses: `hosts` plainly, `ansible` as Ansible's JSON inventory."""

    lab: str
    hosts: list[LabHost]
    ansible: dict[str, Any]


@dataclass(frozen=True)
class LabObject:
    level: str
    kind: str
    name: str


@dataclass(frozen=True)
class LabDown:
    lab: str
    removed: list[LabObject]


@dataclass(frozen=True)
class LabSavedVM:
    path: str
    size: int


@dataclass(frozen=True)
class LabSaved:
    lab: str
    saved: list[LabSavedVM]  # deepest first, in the order they were saved


@dataclass(frozen=True)
class LabRestored:
    lab: str
    restored: list[str]
    failed: list[str]  # "path: why" of each VM that did not resume


@dataclass(frozen=True)
class LevelSwitch:
    """A switch of a level as stored (its bridge not looked at)."""

    name: str
    type: str  # external | internal | private
    address: str | None


@dataclass(frozen=True)
class LevelAdapter:
    """A VM's network adapter as stored (its guard's counters not read)."""

    vm: str
    name: str
    switch: str
    mac: str
    mac_spoofing: bool


@dataclass(frozen=True)
class LevelReport:
    """One level in one answer, what a lab's plan compares its file to: every VM (as `vm list`
    shows it), switch and adapter as stored, every NAT with its dnsmasq and leases as they are;
    nothing repaired (`nat list` makes a NAT real again first), no bridge or counter read."""

    vms: list[VMInfo]
    switches: list[LevelSwitch]
    adapters: list[LevelAdapter]
    nats: list[NatInfo]
