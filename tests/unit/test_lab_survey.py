"""The lab's survey of its levels (nestor/lab/survey.py, observe.py): one request per level
(level_report), the levels below a level asked at the same time, an older nestor's four lists as
the fallback, and a NAT whose dnsmasq died planned as a change (the plan repairs nothing)."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nestor.errors import NotFound
from nestor.lab import file as lab_file
from nestor.lab.observe import observe, observe_lists
from nestor.lab.owners import Owners
from nestor.lab.plan import Op, plan
from nestor.lab.survey import survey
from nestor.lab.up import Up
from tests.unit.lab_fake import FakeLevel, FakeLevels
from tests.unit.test_lab import TWOHV

TWO_L1S = """
name: two
switches:
  lan: {type: internal, address: 10.82.0.1/24}
vms:
  hv1:
    image: nested-host
    memory: 1G
    nested: true
    adapters: [{switch: lan}]
    switches:
      inner: {type: internal, address: 192.168.111.1/24}
    nats:
      inner: {switch: inner, prefix: 192.168.111.0/24, dhcp: true}
    vms:
      web1: {memory: 256M, adapters: [{switch: inner, dhcp: true}]}
  hv2:
    image: nested-host
    memory: 1G
    nested: true
    adapters: [{switch: lan, mac_spoofing: true}]
    vms:
      web2: {memory: 256M}
"""


def _made(tmp_path: Path, text: str) -> tuple[FakeLevels, Owners]:
    levels = FakeLevels(tmp_path)
    owners = Owners(tmp_path / "nestor.db")
    lab = lab_file.parse(text)
    owners.save(lab.name, None, None, text)
    runner = Up(lab, levels, owners, lambda line: None)  # type: ignore[arg-type]
    assert runner.run().failed == []
    for level in levels.levels.values():
        level.asked.clear()
        level.calls.clear()
    return levels, owners


def test_each_level_is_one_request_and_nothing_is_changed(tmp_path: Path) -> None:
    levels, owners = _made(tmp_path, TWO_L1S)
    lab = lab_file.parse(TWO_L1S)
    seen = survey(lab, levels)  # type: ignore[arg-type]
    assert set(seen) == {"", "hv1", "hv2"}
    assert plan(lab, seen, owners.objects("two")).changes == []
    assert {path: level.asked for path, level in levels.levels.items()} == {
        "": ["level_report"], "hv1": ["level_report"], "hv2": ["level_report"]}
    assert all(level.calls == [] for level in levels.levels.values())


def test_the_report_and_the_four_lists_see_the_same_level(tmp_path: Path) -> None:
    levels, _ = _made(tmp_path, TWO_L1S)
    for path in ("", "hv1", "hv2"):
        with levels.open(path) as hv:
            assert observe(hv) == observe_lists(hv), path


class _Barrier(FakeLevel):
    """A level whose report waits until its sibling's is asked too (asked one after the other: broken)."""

    def __init__(self, level: FakeLevel, barrier: threading.Barrier) -> None:
        self.__dict__.update(level.__dict__)
        self.barrier = barrier

    def level_report(self) -> Any:
        self.barrier.wait()
        return super().level_report()


def test_the_levels_below_a_level_are_asked_at_the_same_time(tmp_path: Path) -> None:
    levels, owners = _made(tmp_path, TWO_L1S)
    barrier = threading.Barrier(2, timeout=30)  # a deadlock guard: one L1 asked alone never passes it
    for path in ("hv1", "hv2"):
        levels.levels[path] = _Barrier(levels.levels[path], barrier)
    lab = lab_file.parse(TWO_L1S)
    seen = survey(lab, levels)  # type: ignore[arg-type]
    assert all(report is not None and report.error is None for report in seen.values()), seen
    assert not barrier.broken
    assert plan(lab, seen, owners.objects("two")).changes == []


class _Older(FakeLevel):
    """A level whose nestor has no GET /v1/level (the API's envelope for a route it does not know)."""

    def __init__(self, level: FakeLevel, message: str = "GET /v1/level: Not Found") -> None:
        self.__dict__.update(level.__dict__)
        self.message = message

    def level_report(self) -> Any:
        raise NotFound(self.message, hint="see /v1/openapi.json")


def test_an_older_nestor_is_asked_its_four_lists(tmp_path: Path) -> None:
    levels, owners = _made(tmp_path, TWO_L1S)
    levels.levels["hv1"] = _Older(levels.levels["hv1"])
    lab = lab_file.parse(TWO_L1S)
    seen = survey(lab, levels)  # type: ignore[arg-type]
    assert plan(lab, seen, owners.objects("two")).changes == []
    assert sorted(levels.levels["hv1"].asked) == ["adapter_list web1", "nat_list", "switch_list", "vm_list"]


def test_a_levels_own_not_found_is_not_taken_for_an_older_nestor(tmp_path: Path) -> None:
    levels, _ = _made(tmp_path, TWO_L1S)
    older = _Older(levels.levels["hv1"], "vm 'hv1' not found")
    with pytest.raises(NotFound, match="vm 'hv1' not found"):
        observe(older)
    assert older.asked == []


def test_a_nat_whose_dnsmasq_died_is_a_change_the_plan_does_not_make_and_up_does(tmp_path: Path) -> None:
    levels, owners = _made(tmp_path, TWOHV)
    l1 = levels.levels["hv1"]
    l1.nats["inner"] = replace(l1.nats["inner"], dnsmasq_pid=None)  # dnsmasq died
    lab = lab_file.parse(TWOHV)
    planned = plan(lab, survey(lab, levels), owners.objects("twohv"))  # type: ignore[arg-type]
    assert [(a.level, a.kind, a.name, a.op) for a in planned.changes] == [("hv1", "nat", "inner", Op.CHANGE)]
    assert "dnsmasq" in planned.changes[0].reason
    assert l1.nats["inner"].dnsmasq_pid is None and l1.calls == []  # planning repaired nothing
    runner = Up(lab, levels, owners, lambda line: None)  # type: ignore[arg-type]
    assert [(a.level, a.name, a.op) for a in runner.run().done] == [("hv1", "inner", Op.CHANGE)]
    assert l1.calls == ["dnsmasq_start inner"]
    again = plan(lab, survey(lab, levels), owners.objects("twohv"))  # type: ignore[arg-type]
    assert again.changes == []
