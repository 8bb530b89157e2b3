"""The shipped lab examples (examples/labs/*.yaml): each reads against the schema, and plans and
passes the preflight against a fresh level (nothing there yet) on a host that can nest."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor.lab import file as lab_file
from nestor.lab.observe import Seen
from nestor.lab.plan import Op, plan
from nestor.lab.schema import SCHEMA
from nestor.lab.spec import Lab
from nestor.policy.lab import preflight
from tests.unit.test_lab_preflight import TCG

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "labs"
GiB = 1 << 30


def _planned(name: str) -> tuple[Lab, list[tuple[str, str, str, Op]]]:
    lab = lab_file.read(EXAMPLES / name)
    seen: dict[str, Seen | None] = {"": Seen()}
    result = plan(lab, seen, set())
    assert preflight(lab, result, TCG, 16 * GiB, seen) == []
    return lab, [(a.level, a.kind, a.name, a.op) for a in result.actions]


def test_every_shipped_example_is_tested_here() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == ["depth3.yaml", "libvirt-cluster.yaml",
                                                               "two-hypervisors.yaml"]


@pytest.mark.parametrize("name", ["depth3.yaml", "libvirt-cluster.yaml", "two-hypervisors.yaml"])
def test_examples_validate_against_the_published_schema(name: str) -> None:
    import jsonschema
    import yaml

    jsonschema.Draft202012Validator(SCHEMA).validate(yaml.safe_load((EXAMPLES / name).read_text()))


def test_two_hypervisors_plans_two_l1s_each_with_a_nat_and_an_l2() -> None:
    lab, actions = _planned("two-hypervisors.yaml")
    assert {(lvl, kind, n) for lvl, kind, n, op in actions if op is Op.CREATE} == {
        ("", "switch", "lan"), ("", "vm", "hv1"), ("", "vm", "hv2"),
        ("hv1", "switch", "inner"), ("hv1", "nat", "inner"), ("hv1", "vm", "web1"),
        ("hv2", "switch", "inner"), ("hv2", "nat", "inner"), ("hv2", "vm", "web2")}
    root = lab.root
    assert root.vms["hv2"].adapters[0].mac_spoofing and not root.vms["hv1"].adapters[0].mac_spoofing
    inner = root.vms["hv1"].inner
    assert inner is not None and "10.81.0.12" in (inner.vms["web1"].run or "")  # web1 pings hv2 across the L0 switch


def test_depth3_reaches_three_levels_down() -> None:
    lab, actions = _planned("depth3.yaml")
    assert [level.path for level in lab.levels()] == ["", "l1", "l1/l2"]
    assert ("l1/l2", "vm", "l3", Op.CREATE) in actions and ("l1/l2", "switch", "inner", Op.CREATE) in actions
    assert lab.level("l1/l2").vms["l3"].run is not None


def test_depth3_is_refused_where_l1_cannot_hold_l2() -> None:
    lab = lab_file.parse((EXAMPLES / "depth3.yaml").read_text().replace("memory: 2G", "memory: 1G"))
    seen: dict[str, Seen | None] = {"": Seen()}
    problems = preflight(lab, plan(lab, seen, set()), TCG, 16 * GiB, seen)
    assert [(p.subject, p.rule) for p in problems] == [("vm 'l1' at L0", "memory")]


def test_libvirt_cluster_plans_two_debian_l1s_with_nesting() -> None:
    lab, actions = _planned("libvirt-cluster.yaml")
    vms = lab.root.vms
    assert sorted(vms) == ["a", "b"] and all(v.image == "debian-libvirt" and v.nested for v in vms.values())
    assert {(kind, n) for _, kind, n, _ in actions} == {("switch", "cl0"), ("nat", "cl0"), ("vm", "a"), ("vm", "b")}
