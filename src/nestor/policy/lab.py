"""Preflight of a lab (issue 17), pure: fed with this host's facts, its free memory, the lab and
what each level reported, it names every problem that would make `lab up` fail half way, with the
rule and the fix. `lab up` creates nothing while one is left."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..errors import NestorError
from ..host.facts import HostFacts
from ..lab.observe import Seen
from ..lab.plan import Op, Plan
from ..lab.spec import Lab, Level, VMDef, level_name
from ..model import format_size
from . import accel as accel_rules
from .processor import check_vcpus

MiB = 1 << 20
# What a VM costs its level beyond its memory: QEMU itself, its TCG translation cache, the page tables.
VM_OVERHEAD = 96 * MiB
# What a nested-host level keeps for itself: its kernel, nestor's daemon (Python), dnsmasq, the page cache.
NESTED_HOST_BASE = 320 * MiB


@dataclass(frozen=True)
class Problem:
    subject: str  # "vm 'hv1' at L0"
    rule: str  # nesting | memory | vcpus | collision | ownership
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.subject}: {self.message} [{self.rule}]"

    def to_json(self) -> dict[str, str]:
        return {"subject": self.subject, "rule": self.rule, "message": self.message, "fix": self.fix}


@dataclass(frozen=True)
class Offer:
    """What a level's engine gives its VMs: nesting (and why), and its vCPU cap."""

    nesting: bool
    why: str
    accel: accel_rules.Accel


def offers(lab: Lab, facts: HostFacts) -> dict[str, Offer]:
    """Per level path: L0 from this host's facts; a level inside VM v gets KVM (and so can give
    nesting to its own VMs) only if v has nesting on and v's level could give it."""
    top = accel_rules.choose(facts)
    result = {"": Offer(top.nesting_available, top.nesting_reason, top)}
    for level in lab.levels():
        mine = result[level.path]
        for vm in level.vms.values():
            if vm.inner is None:
                continue
            path = vm.inner.path
            if vm.nested and mine.nesting:
                kvm = accel_rules.Accel("kvm", f"{level.vm_path(vm.name)} has {mine.accel.vendor_flag or 'svm'}",
                                        1024, True, f"{level.vm_path(vm.name)}'s KVM runs with nested=1",
                                        mine.accel.vendor_flag or "svm")
                result[path] = Offer(True, kvm.nesting_reason, kvm)
            else:
                why = (f"{level.vm_path(vm.name)} has nested: false" if not vm.nested
                       else f"{level_name(level.path)} cannot give nesting to it ({mine.why})")
                tcg = accel_rules.Accel("tcg", why, accel_rules.TCG_MAX_VCPUS, False, why, "svm")
                result[path] = Offer(False, why, tcg)
    return result


def preflight(lab: Lab, plan: Plan, facts: HostFacts, mem_free: int, seen: dict[str, Seen | None]) -> list[Problem]:
    problems: list[Problem] = []
    for thing in plan.foreign:
        problems.append(Problem(thing, "ownership", "exists and is not this lab's",
                                "rename it in the lab file, or remove the existing one"))
    levels = offers(lab, facts)
    for level in lab.levels():
        offer = levels[level.path]
        problems.extend(_nesting(level, offer))
        problems.extend(_vcpus(level, offer))
        problems.extend(_collisions(level, seen.get(level.path)))
    problems.extend(_memory(lab, plan, mem_free))
    return problems


def _subject(level: Level, vm: VMDef) -> str:
    return f"vm '{vm.name}' at {level_name(level.path)}"


def _nesting(level: Level, offer: Offer) -> list[Problem]:
    found = []
    for vm in level.vms.values():
        if vm.is_hypervisor and not vm.nested:
            found.append(Problem(_subject(level, vm), "nesting", "holds VMs of its own but has nested: false",
                                 f"set nested: true on {level.vm_path(vm.name)}"))
        elif vm.nested and not offer.nesting:
            fix = ("turn nesting on in the host's KVM module (kvm_amd/kvm_intel nested=1), see nestor host check"
                   if not level.path else f"set nested: true on the VM that holds {level_name(level.path)}")
            found.append(Problem(_subject(level, vm), "nesting", f"needs nested virtualization, which "
                                 f"{level_name(level.path)} cannot give: {offer.why}", fix))
    return found


def _vcpus(level: Level, offer: Offer) -> list[Problem]:
    found = []
    for vm in level.vms.values():
        try:
            check_vcpus(vm.cpus, vm.nested, offer.accel)
        except NestorError as exc:
            found.append(Problem(_subject(level, vm), "vcpus", exc.message, exc.hint or "use fewer cpus"))
    return found


def _memory(lab: Lab, plan: Plan, mem_free: int) -> list[Problem]:
    found = []
    made = {a.name for a in plan.at("") if a.kind == "vm" and a.op in (Op.CREATE, Op.REPLACE)}
    new = [vm for name, vm in lab.root.vms.items() if name in made and vm.host is None]
    need = sum(vm.memory + VM_OVERHEAD for vm in new)
    if new and need > mem_free:
        names = ", ".join(f"'{vm.name}' ({format_size(vm.memory)})" for vm in new)
        found.append(Problem(f"vms {names} at L0", "memory",
                             f"need {format_size(need)} with {format_size(VM_OVERHEAD)} overhead each, "
                             f"and this host has {format_size(mem_free // MiB * MiB)} free",
                             "give the VMs less memory, or stop other VMs first"))
    for level in lab.levels():
        for vm in level.vms.values():
            if vm.inner is None or not vm.inner.vms:
                continue
            room = vm.dynamic.maximum if vm.dynamic is not None and vm.dynamic.maximum else vm.memory
            children = list(vm.inner.vms.values())
            inside = NESTED_HOST_BASE + sum(c.memory + VM_OVERHEAD for c in children)
            if inside > room:
                names = ", ".join(f"'{c.name}' ({format_size(c.memory)})" for c in children)
                found.append(Problem(_subject(level, vm), "memory",
                                     f"its VMs {names} need {format_size(inside)} inside it ({format_size(NESTED_HOST_BASE)} "
                                     f"for its own nestor and {format_size(VM_OVERHEAD)} per VM), and it has {format_size(room)}",
                                     f"give {level.vm_path(vm.name)} memory: {format_size(_round_up(inside))} or more, "
                                     "or its VMs less"))
    return found


def _round_up(size: int) -> int:
    step = 256 * MiB
    return -(-size // step) * step


def _collisions(level: Level, seen: Seen | None) -> list[Problem]:
    found = []
    where = level_name(level.path)
    networks: list[tuple[str, ipaddress.IPv4Network]] = []
    for s in level.switches.values():
        if s.address is not None:
            networks.append((f"switch '{s.name}'", ipaddress.IPv4Interface(s.address).network))
    if seen is not None:
        for other in seen.switches.values():
            if other.name not in level.switches and other.address:
                networks.append((f"switch '{other.name}' (already there)", ipaddress.IPv4Interface(other.address).network))
    for i, (a, net_a) in enumerate(networks):
        for b, net_b in networks[i + 1:]:
            if net_a.overlaps(net_b):
                found.append(Problem(f"{a} at {where}", "collision", f"{net_a} overlaps {b}'s {net_b}",
                                     "give one of them another network"))
    nats = list(level.nats.values())
    for i, a_nat in enumerate(nats):
        for b_nat in nats[i + 1:]:
            if a_nat.switch == b_nat.switch:
                found.append(Problem(f"nat '{a_nat.name}' at {where}", "collision",
                                     f"nat '{b_nat.name}' is on the same switch '{a_nat.switch}'", "one NAT per switch"))
            elif ipaddress.IPv4Network(a_nat.prefix).overlaps(ipaddress.IPv4Network(b_nat.prefix)):
                found.append(Problem(f"nat '{a_nat.name}' at {where}", "collision",
                                     f"{a_nat.prefix} overlaps nat '{b_nat.name}''s {b_nat.prefix}", "give one another prefix"))
    taken: dict[str, str] = {}
    for s in level.switches.values():
        if s.address is not None:
            taken[str(ipaddress.IPv4Interface(s.address).ip)] = f"switch '{s.name}'"
    for vm in level.vms.values():
        if not vm.adapters or vm.adapters[0].ip is None:
            continue
        adapter = vm.adapters[0]
        ip = ipaddress.IPv4Interface(adapter.ip)
        switch = level.switches[adapter.switch]
        if switch.address is not None and ip.network != ipaddress.IPv4Interface(switch.address).network:
            found.append(Problem(_subject(level, vm), "collision",
                                 f"address {ip} is not in switch '{switch.name}''s network "
                                 f"{ipaddress.IPv4Interface(switch.address).network}", "give it an address in that network"))
        holder = taken.get(str(ip.ip))
        if holder is not None:
            found.append(Problem(_subject(level, vm), "collision", f"address {ip.ip} is also {holder}'s",
                                 "give each VM its own address"))
        taken[str(ip.ip)] = f"vm '{vm.name}'"
    return found


def refusal(problems: list[Problem]) -> str:
    """The one-line message of a refusal naming every problem."""
    return f"preflight refused ({len(problems)} problem{'s' if len(problems) != 1 else ''}): " + "; ".join(
        p.line() for p in problems)


# -- lab save (the seed's rules R12-R14 over the whole tree) ------------------------------------
@dataclass(frozen=True)
class SaveView:
    """One VM of the lab as `lab save` sees it before it saves anything."""

    path: str  # "hv1/web"
    state: str  # off | running | paused | saved | (absent: not made)
    nested: bool
    hypervisor_running: bool | None
    detection: str | None = None  # how hypervisor_running was told (or why it could not be)
    inside: tuple[str, ...] | None = None  # the running VMs its nestor reports; None: no nestor answered
    level_blocks_nesting: bool = False  # its level's host policy is nesting=block (a restore would be refused)


SAVABLE = ("running", "paused")


def save_order(lab: Lab, views: dict[str, SaveView]) -> tuple[list[str], list[Problem]]:
    """Which of the lab's VMs `lab save` saves, deepest first (a VM only once every VM running
    inside it is saved, so no hypervisor runs in it when it is), and every VM that makes the save
    refuse before anything is saved."""
    order: list[str] = []
    problems: list[Problem] = []
    for level in lab.levels():
        for vm in level.vms.values():
            path = level.vm_path(vm.name)
            view = views.get(path)
            if view is None or view.state not in SAVABLE:
                continue
            order.append(path)
            subject = f"vm '{path}' at {level_name(level.path)}"
            declared = set(vm.inner.vms) if vm.inner is not None else set()
            inside = view.inside or ()
            foreign = sorted(set(inside) - declared)
            if foreign:
                names = ", ".join(f"'{n}'" for n in foreign)
                problems.append(Problem(subject, "ownership",
                                        f"VMs {names} run inside it and are not the lab's: they would keep a hypervisor "
                                        "running in it",
                                        f"stop them (nestor vm stop NAME --at {path}), or add them to the lab file"))
            explained = bool(set(inside) & declared)
            if view.hypervisor_running and not explained:
                why = "its nestor runs none of the lab's VMs" if view.inside is not None else "no nestor answers inside it"
                problems.append(Problem(subject, "R12-R14",
                                        f"a hypervisor nestor does not manage runs inside it ({why}); saving it is unsafe",
                                        f"stop what runs VMs inside {path}, or stop {path}"))
            elif view.hypervisor_running is None and view.nested and not explained:
                problems.append(Problem(subject, "R12-R14",
                                        f"cannot tell whether a hypervisor runs inside it ({view.detection or 'not observed'})",
                                        "try again"))
            if view.nested and view.level_blocks_nesting:
                problems.append(Problem(subject, "nesting-block",
                                        f"its level's policy blocks nesting, so {path} could be saved but not restored",
                                        (f"nestor vm exec {level.path} -- nestor host set --nesting allow" if level.path
                                         else "nestor host set --nesting allow")))
    order.sort(key=lambda p: -p.count("/"))  # stable: deepest first, the file's order within a depth
    return order, problems
