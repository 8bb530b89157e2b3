"""The lab's preflight rules (nestor.policy.lab), pure: host facts and reports in, problems out."""

from __future__ import annotations

from dataclasses import replace

from nestor.host.facts import HostFacts
from nestor.lab import file as lab_file
from nestor.lab.observe import Seen, SeenSwitch
from nestor.lab.plan import plan
from nestor.policy.lab import NESTED_HOST_BASE, VM_OVERHEAD, Problem, offers, preflight, refusal

TCG = HostFacts(cpu_vendor="intel", cpu_flags=frozenset({"hypervisor"}), kvm_device=True, kvm_kind="pvm",
                kvm_module="kvm_pvm", kvm_nested=None, kvm_max_vcpus=None, qemu_path="/usr/bin/qemu-system-x86_64",
                qemu_version="7.2", mem_total=24 << 30, tsc_khz=2600000, cpus=2)
KVM_NO_NESTED = replace(TCG, cpu_flags=frozenset({"vmx"}), kvm_kind="hardware", kvm_module="kvm_intel", kvm_nested=False,
                        kvm_max_vcpus=16)
GiB = 1 << 30

DEPTH3 = """
name: deep
vms:
  l1:
    image: nested-host
    memory: 2G
    nested: true
    vms:
      l2:
        image: nested-host
        memory: 1G
        nested: true
        vms:
          l3: {memory: 128M}
"""


def _check(text: str, facts: HostFacts = TCG, free: int = 16 * GiB, seen: dict[str, Seen | None] | None = None) -> list[Problem]:
    lab = lab_file.parse(text)
    reports = seen if seen is not None else {"": Seen()}
    return preflight(lab, plan(lab, reports, set()), facts, free, reports)


def test_tcg_at_l0_gives_svm_to_l1_whose_kvm_gives_it_to_l2() -> None:
    lab = lab_file.parse(DEPTH3)
    levels = offers(lab, TCG)
    assert levels[""].nesting and levels[""].accel.name == "tcg"
    assert levels["l1"].nesting and levels["l1"].accel.name == "kvm"
    assert levels["l1/l2"].nesting
    assert _check(DEPTH3) == []


def test_a_vm_without_nesting_cannot_hold_vms_and_its_level_gives_no_nesting() -> None:
    text = DEPTH3.replace("memory: 2G\n    nested: true", "memory: 2G\n    nested: false")
    problems = _check(text)
    subjects = [(p.subject, p.rule) for p in problems]
    assert ("vm 'l1' at L0", "nesting") in subjects  # holds VMs with nested: false
    assert ("vm 'l2' at L1 (in l1)", "nesting") in subjects  # wants nesting l1 cannot give
    assert any("set nested: true on l1" in p.fix for p in problems)


def test_a_host_whose_kvm_has_nesting_off_refuses_every_nested_vm_with_the_fix() -> None:
    problems = [p for p in _check(DEPTH3, facts=KVM_NO_NESTED) if p.rule == "nesting"]
    assert problems[0].subject == "vm 'l1' at L0"
    assert "nested=0" in problems[0].message and "nested=1" in problems[0].fix


def test_memory_the_sum_at_l0_against_free_memory_and_children_against_their_vm() -> None:
    text = "name: m\nvms:\n  a: {memory: 1G}\n  b: {memory: 1G}\n"
    assert _check(text, free=2 * GiB + 2 * VM_OVERHEAD) == []
    problems = _check(text, free=2 * GiB)
    assert [p.rule for p in problems] == ["memory"]
    assert "'a'" in problems[0].subject and "'b'" in problems[0].subject  # every blocking VM is named
    tight = DEPTH3.replace("memory: 1G", "memory: 2G")  # l2 as big as l1: cannot fit with l1's own nestor
    problems = _check(tight)
    assert [(p.subject, p.rule) for p in problems] == [("vm 'l1' at L0", "memory")]
    assert f"{NESTED_HOST_BASE >> 20}M for its own nestor" in problems[0].message
    assert "give l1 memory: 2560M or more" in problems[0].fix


def test_vcpus_above_the_levels_cap_are_refused() -> None:
    problems = _check("name: c\nvms:\n  a: {cpus: 300}\n")
    assert [p.rule for p in problems] == ["vcpus"] and "288" in problems[0].message


def test_collisions_overlapping_switches_nats_and_addresses() -> None:
    text = """
name: c
switches:
  a: {type: internal, address: 10.1.0.1/16}
  b: {type: internal, address: 10.1.2.1/24}
vms:
  x: {adapters: [{switch: a, ip: 10.1.0.5/16}]}
  y: {adapters: [{switch: a, ip: 10.1.0.5/16}]}
  z: {adapters: [{switch: b, ip: 10.1.0.1/16}]}
"""
    problems = _check(text, seen={"": Seen(switches={"old": SeenSwitch("old", "internal", "10.1.9.1/24")})})
    lines = [p.line() for p in problems]
    assert any("switch 'a' at L0" in line and "overlaps switch 'b'" in line for line in lines)
    assert any("overlaps switch 'old' (already there)" in line for line in lines)
    assert any(line.startswith("vm 'y' at L0: address 10.1.0.5 is also vm 'x''s") for line in lines)
    assert any(line.startswith("vm 'z' at L0: address 10.1.0.1/16 is not in switch 'b''s network") for line in lines)
    assert any("vm 'z'" in line and "also switch 'a''s" in line for line in lines)


def test_foreign_objects_are_refused_and_the_refusal_is_one_line() -> None:
    text = "name: f\nswitches:\n  lan: {type: private}\n"
    problems = _check(text, seen={"": Seen(switches={"lan": SeenSwitch("lan", "private", None)})})
    assert [p.rule for p in problems] == ["ownership"]
    message = refusal(problems)
    assert "\n" not in message and "switch 'lan' at L0: exists and is not this lab's" in message
