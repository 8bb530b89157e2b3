"""Under KVM, "a hypervisor runs inside" reads guest_mode and, outside guest mode, EFER.SVME (pure logic, a fake monitor)."""

from __future__ import annotations

from typing import Any

import pytest

from nestor.service.core import kvm_hypervisor_running

IN_GUEST = [{"stats": [{"name": "guest_mode", "value": 1}]}]
OUT = [{"stats": [{"name": "guest_mode", "value": 0}]}]
SVME = "CPU#0\nEFER=0000000000001d01\nCR4=00350ef0\n"
CLEAR = "CPU#0\nEFER=0000000000000d01\nCR4=00350ef0\n"


class Readings:
    def __init__(self, stats: list[list[dict[str, Any]]], registers: list[str]) -> None:
        self.stats, self.regs, self.reads = stats, registers, 0

    def vcpu_stats(self) -> list[dict[str, Any]]:
        self.reads += 1
        return self.stats.pop(0) if len(self.stats) > 1 else self.stats[0]

    def registers(self) -> str:
        return self.regs.pop(0) if len(self.regs) > 1 else self.regs[0]


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nestor.service.core.time.sleep", lambda _s: None)


def test_a_vcpu_in_guest_mode_answers_at_once() -> None:
    mon = Readings([IN_GUEST], [CLEAR])
    assert kvm_hypervisor_running(mon)[0] is True  # type: ignore[arg-type]
    assert mon.reads == 1


def test_an_idle_inner_vm_shows_as_svme_outside_guest_mode() -> None:
    """The depth-3 case: l3 halted, so l2's vCPUs are out of guest mode, but l2's KVM holds a VM."""
    running, how = kvm_hypervisor_running(Readings([OUT], [SVME]))  # type: ignore[arg-type]
    assert running is True and "SVME" in how


def test_a_later_reading_counts() -> None:
    mon = Readings([OUT, OUT, IN_GUEST], [CLEAR])
    assert kvm_hypervisor_running(mon)[0] is True  # type: ignore[arg-type]
    assert mon.reads == 3


def test_nothing_inside_is_false_after_every_reading() -> None:
    mon = Readings([OUT], [CLEAR])
    running, how = kvm_hypervisor_running(mon, samples=5)  # type: ignore[arg-type]
    assert running is False and "5 readings" in how
    assert mon.reads == 5


def test_no_guest_mode_stat_and_clear_registers_is_unknown() -> None:
    assert kvm_hypervisor_running(Readings([[]], [CLEAR]))[0] is None  # type: ignore[arg-type]


def test_a_vm_without_nesting_is_answered_without_qmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """No VT-x/AMD-V in its CPU, so no hypervisor: `vm show` of a leaf asks QMP nothing for it (in a
    TCG-run L1, that round trip was most of a `vm show l1/l2`). With nesting on, QMP is asked."""
    from types import SimpleNamespace

    from nestor.model import VMConfig
    from nestor.service import core as core_module

    asked: list[str] = []

    class NoMonitor:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            asked.append("qmp")
            raise core_module.EngineError("no QMP in this test")

    monkeypatch.setattr(core_module.process, "live_pid", lambda vm_dir: 4242)
    monkeypatch.setattr(core_module, "Monitor", NoMonitor)
    fake: Any = SimpleNamespace(vm_dir=lambda config: tmp_path, launch=lambda config: {"accel": "tcg"})
    assert core_module.Core.hypervisor_running(fake, VMConfig(name="leaf")) == (False, "nesting is off")
    assert asked == []
    running, how = core_module.Core.hypervisor_running(fake, VMConfig(name="hv", nested=True))
    assert running is None and "no QMP in this test" in how and asked == ["qmp"]
