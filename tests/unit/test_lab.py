"""Labs (issue 17): the file, the plan, `up` and `down` over in-memory levels (tests/unit/lab_fake.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nestor.errors import InvalidInput
from nestor.lab import file as lab_file
from nestor.lab.down import down
from nestor.lab.owners import Owners
from nestor.lab.plan import Op, plan
from nestor.lab.schema import rendered
from nestor.lab.status import inventory, status
from nestor.lab.survey import survey
from nestor.lab.up import Up, boot_params
from nestor.service.types import VMState
from tests.unit.lab_fake import FakeLevels

ROOT = Path(__file__).resolve().parents[2]

TWOHV = """
name: twohv
switches:
  lan: {type: internal, address: 10.81.0.1/24}
vms:
  hv1:
    image: nested-host
    cpus: 2
    memory: 1G
    nested: true
    adapters: [{switch: lan, mac_spoofing: false, ip: 10.81.0.11/24}]
    switches:
      inner: {type: internal, address: 192.168.110.1/24}
    nats:
      inner: {switch: inner, prefix: 192.168.110.0/24, dhcp: true}
    vms:
      web1: {image: appliance, memory: 256M, adapters: [{switch: inner, dhcp: true}], run: "echo hi"}
  hv2:
    image: nested-host
    memory: 1G
    nested: true
    adapters: [{switch: lan, mac_spoofing: true}]
"""


def test_the_published_schema_is_the_one_used() -> None:
    assert (ROOT / "docs" / "lab.schema.json").read_text() == rendered()


def test_the_issue_example_reads_into_a_tree_of_levels() -> None:
    lab = lab_file.parse(TWOHV)
    assert lab.name == "twohv"
    assert [level.path for level in lab.levels()] == ["", "hv1"]
    hv1 = lab.root.vms["hv1"]
    assert (hv1.cpus, hv1.memory, hv1.nested, hv1.image) == (2, 1 << 30, True, "nested-host")
    assert hv1.inner is not None and hv1.inner.nats["inner"].prefix == "192.168.110.0/24"
    assert hv1.inner.vms["web1"].memory == 256 << 20
    assert lab.root.vms["hv2"].adapters[0].mac_spoofing is True


@pytest.mark.parametrize(("text", "message", "hint"), [
    ("name: x\nvms:\n  a: {memory: 1X}", "vms.a.memory: '1X' is not a size", "512M"),
    ("name: x\nvms:\n  a: {memroy: 1G}", "vms.a: unknown key 'memroy'", "did you mean 'memory'?"),
    ("name: x\nswitches:\n  lan: {type: internal}\nvms:\n  a: {adapters: [{switch: lon}]}",
     "vms.a.adapters.0.switch: no switch 'lon' at this level", "did you mean 'lan'?"),
    ("name: x\nvms: [", "lab file:2:7: not valid YAML", "line and column"),
    ("name: x\nvms:\n  a: {}\n  a: {}", "lab file:4:3: duplicate key 'a'", "rename"),
    ("name: X", "name: invalid name 'X'", "lower-case"),
    ("vms: {}", "(top): 'name' is missing", "add name"),
    ("name: x\nvms:\n  a: {vms: {b: {}}}", "vms.a: image 'appliance' cannot run a hypervisor", "nested-host"),
    ("name: x\nswitches:\n  s: {type: internal, address: 10.0.0.0/33}", "switches.s.address:", None),
    ("name: x\nswitches:\n  s: {type: private, address: 10.0.0.1/24}", "a private switch has no address", None),
    ("name: x\nswitches:\n  s: {type: internal, address: 10.0.0.1/24}\nnats:\n  n: {switch: s, prefix: 10.1.0.0/24}",
     "nats.n.prefix: 10.1.0.0/24 does not hold the switch's address", "10.0.0.0/24"),
    ("name: x\nvms:\n  a: {adapters: [{switch: s, mac: 01:00:00:00:00:01}]}\nswitches:\n  s: {type: private}",
     "vms.a.adapters.0.mac: invalid MAC address", None),
    ("name: x\nvms:\n  a: {image: nested-host, vms: {b: {host: auto}}}", "vms.a.vms.b.host: only L0", None),
    ("!!python/object/apply:os.system ['true']", "not valid YAML", None),
])
def test_bad_files_are_one_line_errors_naming_the_key(text: str, message: str, hint: str | None) -> None:
    with pytest.raises(InvalidInput) as caught:
        lab_file.parse(text)
    assert message in caught.value.message
    assert "\n" not in caught.value.message
    if hint is not None:
        assert caught.value.hint is not None and hint in caught.value.hint


def test_boot_params_carry_the_static_address_and_the_switch_as_gateway() -> None:
    lab = lab_file.parse(TWOHV)
    assert boot_params(lab.root, lab.root.vms["hv1"]) == ["nestor.hostname=hv1", "nestor.ip=10.81.0.11/24",
                                                          "nestor.gw=10.81.0.1"]
    assert lab.root.vms["hv1"].inner is not None
    assert "nestor.dhcp=1" in boot_params(lab.root.vms["hv1"].inner, lab.root.vms["hv1"].inner.vms["web1"])


def _up(tmp_path: Path, text: str, levels: FakeLevels, owners: Owners) -> Up:
    lab = lab_file.parse(text)
    owners.save(lab.name, None, None, text)
    runner = Up(lab, levels, owners, lambda line: None)  # type: ignore[arg-type]
    runner.run()
    return runner


def test_plan_of_a_new_lab_creates_every_level_with_reasons(tmp_path: Path) -> None:
    lab = lab_file.parse(TWOHV)
    levels = FakeLevels(tmp_path)
    seen = survey(lab, levels)  # type: ignore[arg-type]
    assert seen["hv1"] is None  # hv1 does not exist: its level is not asked
    result = plan(lab, seen, set())
    ops = {(a.level, a.kind, a.name): a for a in result.actions}
    assert ops[("", "switch", "lan")].op is Op.CREATE
    assert ops[("", "vm", "hv1")].op is Op.CREATE
    assert ops[("hv1", "vm", "web1")].op is Op.CREATE
    assert "inside hv1, which this run creates" in ops[("hv1", "nat", "inner")].reason
    assert levels.levels[""].calls == []  # planning changed nothing


def test_up_makes_every_level_then_a_second_run_has_nothing_to_do(tmp_path: Path) -> None:
    levels = FakeLevels(tmp_path)
    owners = Owners(tmp_path / "nestor.db")
    runner = _up(tmp_path, TWOHV, levels, owners)
    assert runner.outcome.failed == []
    l0, l1 = levels.levels[""], levels.levels["hv1"]
    assert set(l0.vms) == {"hv1", "hv2"} and all(v.state is VMState.RUNNING for v in l0.vms.values())
    assert l0.switches["lan"].address == "10.81.0.1/24"
    assert l0.adapters["hv2"][0].mac_spoofing is True and l0.adapters["hv1"][0].mac_spoofing is False
    assert l1.nats["inner"].dhcp and l1.vms["web1"].state is VMState.RUNNING
    assert levels.files[("hv1", "/var/lib/nestor/uploads/labs/twohv/web1.sh")] == "echo hi"
    assert ("hv1", "vm", "web1") in owners.objects("twohv")
    # the second run: the plan over every level keeps everything
    lab = lab_file.parse(TWOHV)
    again = plan(lab, survey(lab, levels), owners.objects("twohv"))  # type: ignore[arg-type]
    assert again.changes == [], again.changes
    calls = len(l0.calls) + len(l1.calls)
    assert _up(tmp_path, TWOHV, levels, owners).outcome.done == []
    assert len(l0.calls) + len(l1.calls) == calls


def test_a_changed_file_changes_removes_and_keeps(tmp_path: Path) -> None:
    levels = FakeLevels(tmp_path)
    owners = Owners(tmp_path / "nestor.db")
    _up(tmp_path, TWOHV, levels, owners)
    changed = TWOHV.replace("cpus: 2", "cpus: 1").replace("mac_spoofing: true", "mac_spoofing: false")
    changed = changed.split("  hv2:")[0].replace("      web1:", "      web2:")
    lab = lab_file.parse(changed)
    result = plan(lab, survey(lab, levels), owners.objects("twohv"))  # type: ignore[arg-type]
    ops = {(a.level, a.kind, a.name): (a.op, a.reason) for a in result.actions}
    assert ops[("", "vm", "hv1")][0] is Op.CHANGE and "cpus 2 → 1" in ops[("", "vm", "hv1")][1]
    assert ops[("", "vm", "hv2")][0] is Op.REMOVE
    assert ops[("", "switch", "lan")][0] is Op.KEEP
    _up(tmp_path, changed, levels, owners)
    assert set(levels.levels[""].vms) == {"hv1"} and levels.levels[""].vms["hv1"].vcpus == 1
    assert set(levels.levels["hv1"].vms) == {"web2"}  # web1 removed (the lab's), web2 made
    assert ("", "vm", "hv2") not in owners.objects("twohv")


def test_objects_the_lab_did_not_make_are_foreign_and_never_removed(tmp_path: Path) -> None:
    levels = FakeLevels(tmp_path)
    from nestor.service import SwitchSpec, SwitchType
    from nestor.service.types import VMSpec

    levels.levels[""].switch_new(SwitchSpec("lan", SwitchType.INTERNAL))
    levels.levels[""].vm_new(VMSpec("other"))
    lab = lab_file.parse(TWOHV)
    result = plan(lab, survey(lab, levels), set())  # type: ignore[arg-type]
    assert result.foreign == ["switch 'lan' at L0"]
    assert not [a for a in result.actions if a.name == "other"]  # not the lab's: not even listed


def test_a_failed_vm_is_left_for_a_rerun_which_converges(tmp_path: Path) -> None:
    levels = FakeLevels(tmp_path)
    owners = Owners(tmp_path / "nestor.db")
    levels.levels[""].fail_start.add("hv2")
    runner = _up(tmp_path, TWOHV, levels, owners)
    assert len(runner.outcome.failed) == 1 and runner.outcome.failed[0].startswith("hv2:")
    assert levels.levels["hv1"].vms["web1"].state is VMState.RUNNING  # the independent VM went on
    assert ("", "vm", "hv2") in owners.objects("twohv")  # made and recorded: down would remove it
    levels.levels[""].fail_start.clear()
    again = _up(tmp_path, TWOHV, levels, owners)
    assert again.outcome.failed == []
    assert [(a.kind, a.name, a.op) for a in again.outcome.done] == [("vm", "hv2", Op.START)]


def test_down_removes_what_the_lab_made_and_nothing_else(tmp_path: Path) -> None:
    from nestor.service.types import VMSpec

    levels = FakeLevels(tmp_path)
    owners = Owners(tmp_path / "nestor.db")
    levels.levels[""].vm_new(VMSpec("bystander"))
    _up(tmp_path, TWOHV, levels, owners)
    removed = down("twohv", levels, owners, lambda line: None)  # type: ignore[arg-type]
    assert set(levels.levels[""].vms) == {"bystander"}
    assert levels.levels[""].switches == {}
    # hv1's inner switch, NAT and web1 went with hv1: not removed one by one
    assert sorted(removed) == [("", "switch", "lan"), ("", "vm", "hv1"), ("", "vm", "hv2")]
    assert owners.all() == []


def test_status_and_inventory_name_every_vm_with_its_address(tmp_path: Path) -> None:
    levels = FakeLevels(tmp_path)
    owners = Owners(tmp_path / "nestor.db")
    _up(tmp_path, TWOHV, levels, owners)
    lab = lab_file.parse(TWOHV)
    seen = survey(lab, levels)  # type: ignore[arg-type]
    data = status(lab, seen)
    vms = {vm["path"]: vm for level in data["levels"] for vm in level["vms"]}
    assert vms["hv1"]["state"] == "running" and vms["hv1"]["addresses"] == ["10.81.0.11"]
    assert vms["hv1/web1"]["state"] == "running"
    inv = inventory(lab, seen)
    assert inv["_meta"]["hostvars"]["hv1"]["ansible_host"] == "10.81.0.11"
    assert inv["in_hv1"]["hosts"] == ["hv1/web1"]
    json.dumps(inv)


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_the_shipped_quickstart_labs_follow_the_depth_rules_and_pass_the_preflight(depth: int) -> None:
    """`nestor quickstart --depth N` brings up the lab nestor ships: its levels, sizes and NAT
    prefixes are policy/depth.py's, and it passes the file's checks and the preflight."""
    from nestor.lab.observe import Seen
    from nestor.policy import depth as depth_rules
    from nestor.policy.lab import preflight
    from nestor.quickstart import PING_MARK, lab_text
    from tests.unit.test_lab_preflight import TCG

    lab = lab_file.parse(lab_text(depth), "quickstart")
    chain = depth_rules.levels(depth)
    assert [level.path for level in lab.levels()] == ["", *[lv.path for lv in chain[:-1]]]
    for lv in chain:
        parent = lab.level(lv.path.rpartition("/")[0])
        vm = parent.vms[lv.name]
        assert (vm.cpus, vm.memory, vm.nested) == (lv.vcpus, lv.memory, lv.nested_host)
        assert vm.image == ("nested-host" if lv.nested_host else "appliance")
        if lv.nested_host:
            gateway, prefix = depth_rules.nat_subnet(lv.level)
            assert vm.inner is not None and vm.inner.switches["nat0"].address == gateway
            assert vm.inner.nats["nat0"].prefix == prefix and vm.inner.nats["nat0"].dhcp
        else:
            assert vm.run is not None and PING_MARK in vm.run
    seen: dict[str, Seen | None] = {"": Seen()}
    assert preflight(lab, plan(lab, seen, set()), TCG, 8 << 30, seen) == []


def test_quickstart_inside_is_the_lab_below_the_level() -> None:
    from nestor.quickstart import inside_text

    lab = lab_file.parse(inside_text(3, 1), "below l1")
    assert list(lab.root.vms) == ["l2"] and list(lab.root.switches) == ["nat0"] and list(lab.root.nats) == ["nat0"]
    assert list(lab.level("l2").vms) == ["l3"]
