"""`lab save`'s rule (nestor.policy.lab.save_order), pure: what each VM showed in, the order and refusals out."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestor.lab import file as lab_file
from nestor.lab.spec import Lab
from nestor.policy.lab import SaveView, save_order
from nestor.service.types import VMState
from tests.unit.lab_fake import FakeLevels

TREE = """
name: tree
vms:
  hv1:
    image: nested-host
    memory: 2G
    nested: true
    vms:
      mid:
        image: nested-host
        memory: 1G
        nested: true
        vms:
          leaf: {memory: 128M}
      web: {memory: 128M}
  plain: {memory: 128M}
  idle: {memory: 128M}
"""


def view(path: str, state: str = "running", nested: bool = False, hv: bool | None = False,
         inside: tuple[str, ...] | None = None, blocks: bool = False) -> SaveView:
    return SaveView(path, state, nested, hv, "EFER.SVME of 1 of 2 vCPUs set", inside, blocks)


def everything_running() -> dict[str, SaveView]:
    return {"hv1": view("hv1", nested=True, hv=True, inside=("mid", "web")),
            "hv1/mid": view("hv1/mid", nested=True, hv=True, inside=("leaf",)),
            "hv1/mid/leaf": view("hv1/mid/leaf"), "hv1/web": view("hv1/web"),
            "plain": view("plain"), "idle": view("idle", state="off")}


def test_deepest_first_each_vm_after_every_vm_inside_it() -> None:
    order, problems = save_order(lab_file.parse(TREE), everything_running())
    assert problems == []
    assert order == ["hv1/mid/leaf", "hv1/mid", "hv1/web", "hv1", "plain"]  # idle is off: not saved
    for i, path in enumerate(order):
        assert not any(later.startswith(path + "/") for later in order[i + 1:])


def test_a_hypervisor_nestor_does_not_manage_refuses_naming_the_vm() -> None:
    views = everything_running()
    views["plain"] = view("plain", nested=True, hv=True, inside=None)  # KVM inside, no nestor answers
    views["hv1/web"] = view("hv1/web", nested=True, hv=True, inside=())  # a nestor that runs no VM
    _, problems = save_order(lab_file.parse(TREE), views)
    assert [(p.subject, p.rule) for p in problems] == [("vm 'plain' at L0", "R12-R14"),
                                                        ("vm 'hv1/web' at L1 (in hv1)", "R12-R14")]
    assert "no nestor answers inside it" in problems[0].message
    assert "its nestor runs none of the lab's VMs" in problems[1].message
    assert all(p.fix for p in problems)


def test_vms_inside_that_are_not_the_labs_refuse() -> None:
    views = everything_running()
    views["hv1"] = view("hv1", nested=True, hv=True, inside=("mid", "stray", "web"))
    _, problems = save_order(lab_file.parse(TREE), views)
    assert [(p.subject, p.rule) for p in problems] == [("vm 'hv1' at L0", "ownership")]
    assert "'stray'" in problems[0].message and "--at hv1" in problems[0].fix


def test_unknown_hypervisor_state_refuses_unless_the_labs_vms_explain_it() -> None:
    views = everything_running()
    views["plain"] = view("plain", nested=True, hv=None, inside=None)
    views["hv1"] = view("hv1", nested=True, hv=None, inside=("mid", "web"))  # its VMs are saved first
    _, problems = save_order(lab_file.parse(TREE), views)
    assert [(p.subject, p.rule) for p in problems] == [("vm 'plain' at L0", "R12-R14")]
    assert "cannot tell" in problems[0].message and "EFER" in problems[0].message


def test_a_level_that_blocks_nesting_refuses_the_nested_vms_it_could_not_restore() -> None:
    views = everything_running()
    views["hv1/mid"] = view("hv1/mid", nested=True, hv=True, inside=("leaf",), blocks=True)
    _, problems = save_order(lab_file.parse(TREE), views)
    assert [(p.subject, p.rule) for p in problems] == [("vm 'hv1/mid' at L1 (in hv1)", "nesting-block")]
    assert problems[0].fix == "nestor vm exec hv1 -- nestor host set --nesting allow"


def test_saved_off_and_missing_vms_are_left_alone() -> None:
    views = {"hv1": view("hv1", state="saved", nested=True, hv=None), "plain": view("plain", state="off")}
    assert save_order(lab_file.parse(TREE), views) == ([], [])


# -- lab save / restore over in-memory levels (tests/unit/lab_fake.py) ----------------------------
def _lab_up(tmp_path: Path) -> tuple[FakeLevels, Lab]:
    from nestor.lab.owners import Owners
    from tests.unit.test_lab import TWOHV, _up

    levels = FakeLevels(tmp_path)
    _up(tmp_path, TWOHV, levels, Owners(tmp_path / "nestor.db"))
    return levels, lab_file.parse(TWOHV)


def _saves(levels: FakeLevels) -> list[str]:
    return [f"{path or 'L0'}: {c}" for path, level in levels.levels.items() for c in level.calls if c.startswith("vm_save")]


def test_save_goes_bottom_up_and_restore_top_down(tmp_path: Path) -> None:
    from nestor.lab.saving import restore, save

    levels, lab = _lab_up(tmp_path)
    l0, l1 = levels.levels[""], levels.levels["hv1"]
    l0.calls.clear()
    l1.calls.clear()
    done = save(lab, levels, lambda line: None)  # type: ignore[arg-type]
    assert [s.path for s in done] == ["hv1/web1", "hv1", "hv2"]
    assert l1.vms["web1"].state is VMState.SAVED and l0.vms["hv1"].state is VMState.SAVED
    assert l0.vms["hv2"].state is VMState.SAVED
    assert save(lab, levels, lambda line: None) == []  # type: ignore[arg-type]
    back = restore(lab, levels, lambda line: None)  # type: ignore[arg-type]
    assert back.failed == [] and sorted(back.paths) == ["hv1", "hv1/web1", "hv2"]
    assert back.paths.index("hv1") < back.paths.index("hv1/web1")  # top down (hv2 in parallel)
    assert all(v.state is VMState.RUNNING for lvl in (l0, l1) for v in lvl.vms.values())
    assert "vm_start hv1" in l0.calls and "vm_start hv2" in l0.calls and l1.calls == ["vm_save web1", "vm_start web1"]


def test_save_refuses_before_anything_is_saved(tmp_path: Path) -> None:
    from nestor.errors import PolicyError
    from nestor.lab.saving import save
    from nestor.service.types import VMSpec

    levels, lab = _lab_up(tmp_path)
    l1 = levels.levels["hv1"]
    l1.vm_new(VMSpec("stray"))
    l1.vm_start("stray")  # a VM of hv1's nestor that the lab does not have
    with pytest.raises(PolicyError) as refused:
        save(lab, levels, lambda line: None)  # type: ignore[arg-type]
    assert refused.value.message.startswith("save refused (1 problem): vm 'hv1' at L0: VMs 'stray' run inside it")
    assert refused.value.message.endswith("nothing was saved") and refused.value.hint
    assert _saves(levels) == []
    assert all(v.state is VMState.RUNNING for lvl in levels.levels.values() for v in lvl.vms.values())
