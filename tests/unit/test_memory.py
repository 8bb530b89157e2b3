"""Memory rules without QEMU: validation, the balancer's decision, R7 and R12-R14 with a fake detection."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine.argv import LaunchSpec, build
from nestor.errors import Conflict, InvalidInput, PolicyError, StateError
from nestor.model import VMConfig, VMState
from nestor.policy import memory as rules
from nestor.service import memory
from nestor.service.core import Core
from nestor.service.types import MemoryChange

M = 1 << 20
G = 1 << 30
HOST = 8 * G
GOLDEN = Path(__file__).parent / "golden"


def cfg(**kw: object) -> VMConfig:
    return replace(VMConfig(name="v", memory=512 * M), **kw)  # type: ignore[arg-type]


# -- resolve and validate ---------------------------------------------------------------------
def test_static_room_is_startup_unless_maximum_set() -> None:
    assert rules.resolve(cfg()).room == 512 * M
    assert rules.resolve(cfg(memory_maximum=G)).room == G
    plan = rules.resolve(cfg(dynamic_memory=True))
    assert (plan.minimum, plan.startup, plan.maximum, plan.buffer) == (256 * M, 512 * M, G, 20)
    assert plan.room == G


def test_static_startup_above_maximum_raises_the_room() -> None:
    new = rules.change(cfg(memory_maximum=G), startup=2 * G)
    assert new.memory_maximum is None and rules.resolve(new).room == 2 * G
    dyn = rules.change(cfg(dynamic_memory=True, memory_maximum=G), startup=2 * G)
    with pytest.raises(InvalidInput, match="startup memory 2G is more than maximum memory 1G"):
        rules.validate(dyn, HOST)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"minimum": 600 * M}, "minimum memory 600M is more than startup memory 512M"),
        ({"maximum": 256 * M, "dynamic": True}, "startup memory 512M is more than maximum memory 256M"),
        ({"startup": 16 * M}, "startup memory 16M is too small"),
        ({"minimum": 8 * M}, "minimum memory 8M is too small"),
        ({"maximum": 64 * G}, r"maximum memory 64G is more than the host has \(8192M\)"),
        ({"startup": 16 * G}, "more than the host has"),
        ({"buffer": 4}, r"memory buffer 4% is out of range \(5 to 2000 %\)"),
        ({"buffer": 2001}, "out of range"),
        ({"startup": 512 * M + 1}, "not a whole number of MiB"),
        ({"startup": 5 * G, "dynamic": True}, "the default: twice the startup"),
    ],
)
def test_validation_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises((InvalidInput, Conflict), match=match) as info:
        rules.validate(rules.change(cfg(), **changes), HOST)  # type: ignore[arg-type]
    assert info.value.hint
    assert isinstance(info.value, Conflict) == ("more than the host has" in match)  # docs/decisions.md


def test_valid_dynamic_config() -> None:
    new = rules.change(cfg(), dynamic=True, minimum=128 * M, maximum=2 * G, buffer=2000)
    plan = rules.validate(new, HOST)
    assert (plan.minimum, plan.maximum, plan.buffer, plan.room) == (128 * M, 2 * G, 2000, 2 * G)


def test_live_changes() -> None:
    old = cfg(memory_maximum=G)
    rules.check_live_change("v", old, rules.change(old, startup=768 * M), G)
    with pytest.raises(StateError, match="started with room for 1G of memory; 2G needs more.*while it is off"):
        rules.check_live_change("v", old, rules.change(old, startup=2 * G), G)
    with pytest.raises(StateError, match="dynamic memory can only be turned on or off while the VM is off"):
        rules.check_live_change("v", old, rules.change(old, dynamic=True), G)
    dyn = cfg(dynamic_memory=True, memory_maximum=G)
    with pytest.raises(StateError, match="startup memory can only change while the VM is off"):
        rules.check_live_change("v", dyn, rules.change(dyn, startup=600 * M), G)
    rules.check_live_change("v", dyn, rules.change(dyn, buffer=50, minimum=128 * M), G)


def test_r7_and_r12_wording() -> None:
    with pytest.raises(PolicyError) as info:
        rules.check_no_hypervisor("l1", True, "EFER.SVME of 1 of 2 vCPUs set")
    assert info.value.message.endswith(
        ": a hypervisor is running inside vm 'l1' (nested virtualization); memory can only change while the VM is off")
    assert "R7" in info.value.message
    rules.check_no_hypervisor("l1", False, "")
    with pytest.raises(StateError, match="cannot tell"):
        rules.check_no_hypervisor("l1", None, "busy")
    with pytest.raises(PolicyError, match=r"rules R12-R14.*saving or migrating an AMD L1 while its L2 runs is unsafe"):
        rules.check_save("l1", True, "")
    rules.check_save("l1", False, "")


def test_shrink_floor() -> None:
    mem = rules.GuestMemory(actual=512 * M, total=480 * M, available=280 * M, reported_at=1.0)
    assert mem.demand == 200 * M and mem.overhead == 32 * M
    rules.check_shrink("v", 256 * M, mem)
    with pytest.raises(StateError, match="uses about 232M of memory: it cannot shrink to 200M"):
        rules.check_shrink("v", 200 * M, mem)
    with pytest.raises(StateError, match="has not reported"):
        rules.check_shrink("v", 200 * M, rules.GuestMemory(actual=512 * M))


# -- the balancer's decision ------------------------------------------------------------------
PLAN = rules.MemoryPlan(dynamic=True, startup=512 * M, minimum=256 * M, maximum=2 * G, buffer=20)


def guest(actual: int, demand: int, at: float = 100.0, overhead: int = 0) -> rules.GuestMemory:
    total = actual - overhead
    return rules.GuestMemory(actual=actual, total=total, available=total - demand, reported_at=at)


def test_target_is_demand_plus_buffer_within_bounds() -> None:
    assert rules.want(PLAN, guest(G, 500 * M)) == 600 * M
    assert rules.want(PLAN, guest(G, 500 * M, overhead=30 * M)) == 630 * M
    assert rules.want(PLAN, guest(G, 10 * M)) == PLAN.minimum  # never below minimum
    assert rules.want(PLAN, guest(G, 1900 * M)) == PLAN.maximum  # never above maximum


def test_grow_at_once_shrink_in_steps() -> None:
    grow = rules.decide(PLAN, guest(512 * M, 500 * M), now=101, last_change=None)
    assert grow.target == 600 * M and "grow" in grow.reason
    shrink = rules.decide(PLAN, guest(2 * G, 100 * M), now=101, last_change=None)
    assert shrink.target == 1536 * M  # 25 % of 2G per step, not straight to the minimum
    last = rules.decide(PLAN, guest(300 * M, 100 * M), now=101, last_change=None)
    assert last.target == PLAN.minimum


def test_rate_limit_and_stale_reports() -> None:
    mem = guest(2 * G, 100 * M, at=100)
    assert rules.decide(PLAN, mem, now=101, last_change=100.5).target is None  # report older than the change
    mem = guest(2 * G, 100 * M, at=102)
    assert "rate limit" in rules.decide(PLAN, mem, now=102, last_change=101).reason
    assert rules.decide(PLAN, mem, now=103.5, last_change=101).target is not None
    small = guest(G, 500 * M, at=200)
    assert "grow" not in rules.decide(PLAN, replace(small, actual=612 * M, total=612 * M), 201, None).reason


def test_waits_for_a_moving_balloon() -> None:
    mem = guest(700 * M, 100 * M, at=105)
    moving = rules.decide(PLAN, mem, now=105, last_change=104, pending=300 * M)
    assert moving.target is None and "moving" in moving.reason
    late = rules.decide(PLAN, mem, now=104 + rules.SETTLE_TIMEOUT + 1, last_change=104, pending=300 * M)
    assert late.target is not None


def test_no_stats_no_change() -> None:
    assert rules.decide(PLAN, rules.GuestMemory(actual=G), 1, None).target is None
    assert rules.decide(PLAN, replace(guest(G, 100 * M), reported_at=0), 1, None).target is None


def test_hold_while_a_hypervisor_runs() -> None:
    decision = rules.decide(PLAN, guest(2 * G, 10 * M), now=200, last_change=None, hold="a hypervisor is running")
    assert decision.target is None and decision.held and "a hypervisor is running" in decision.reason


def test_balancer_cycle_holds_with_fake_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The balancer asks service.hypervisor_running and never touches the balloon while it says yes."""
    from nestor.service import balancer

    core = Core(tmp_path / "home")
    config = core.vms.add(cfg(name="l1", nested=True, dynamic_memory=True))
    vm_dir = core.home.vm_dir(config.id)
    vm_dir.mkdir(parents=True)
    calls: list[str] = []

    class FakeMonitor:
        def __init__(self, *a: object, **k: object) -> None:
            pass

        def __enter__(self) -> FakeMonitor:
            return self

        def __exit__(self, *a: object) -> None:
            pass

        def balloon_stats_interval(self) -> int:
            return rules.STATS_INTERVAL

        def balloon_stats(self) -> object:
            from nestor.engine.qmp import BalloonStats

            return BalloonStats({"stat-total-memory": 2 * G, "stat-available-memory": 2 * G - 10 * M}, 10**10)

        def balloon_actual(self) -> int:
            return 2 * G

        def balloon(self, target: int) -> None:
            calls.append(f"balloon {target}")

    monkeypatch.setattr(balancer, "Monitor", FakeMonitor)
    decisions: list[str] = []
    bal = balancer.Balancer(core, on_decision=lambda vm, d, mem: decisions.append(d.reason))
    running = {"value": True}
    monkeypatch.setattr(core, "hypervisor_running", lambda c: (running["value"], "fake detection"))
    state = balancer._VMState(4242, None, None)
    decision = bal.visit(config, state)
    assert decision.held and calls == []
    assert "a hypervisor is running inside vm 'l1'" in (vm_dir / paths.BALANCER_STATUS).read_text()
    assert decisions and "rule R7" in decisions[0]
    running["value"] = False
    decision = bal.visit(config, state)
    assert not decision.held and calls == [f"balloon {decision.target}"]


# -- use cases with a fake detection ----------------------------------------------------------
@pytest.fixture
def running_l1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Core, dict[str, bool | None]]:
    service = Core(tmp_path / "home")
    service.vms.add(cfg(name="l1", nested=True))
    (service.home.vm_dir(1)).mkdir(parents=True)
    detected: dict[str, bool | None] = {"running": True}
    monkeypatch.setattr(service, "observe", lambda c: (VMState.RUNNING, 4242))
    monkeypatch.setattr(service, "hypervisor_running", lambda c: (detected["running"], "fake"))
    monkeypatch.setattr(memory.process, "live_pid", lambda d: 4242)
    return service, detected


def test_set_memory_refused_while_hypervisor_runs(running_l1: tuple[Core, dict[str, bool | None]]) -> None:
    service, _ = running_l1
    with pytest.raises(PolicyError) as info:
        memory.set_memory(service, "l1", MemoryChange(startup=G))
    assert "a hypervisor is running inside vm 'l1' (nested virtualization); memory can only change while the VM is off" \
        in info.value.message
    assert service.vms.get("l1").memory == 512 * M


def test_save_refused_while_hypervisor_runs(running_l1: tuple[Core, dict[str, bool | None]]) -> None:
    service, _ = running_l1
    with pytest.raises(PolicyError, match="R12-R14"):
        memory.save(service, "l1", lambda c: None)
    assert not (service.home.vm_dir(1) / paths.SAVED_STATE).exists()


def test_off_vm_always_changes(tmp_path: Path) -> None:
    from nestor.service import Service

    service = Service(tmp_path / "home")
    service.core.vms.add(cfg(name="l1", nested=True))
    service.vm_set_memory("l1", MemoryChange(startup=G, dynamic=True, minimum=256 * M, maximum=2 * G, buffer=30))
    got = service.core.vms.get("l1")
    assert (got.memory, got.dynamic_memory, got.memory_minimum, got.memory_maximum, got.memory_buffer) == (
        G, True, 256 * M, 2 * G, 30)
    with pytest.raises(InvalidInput, match="nothing to change"):
        service.vm_set_memory("l1", MemoryChange())
    info = service.vm_show("l1")
    assert info.dynamic_memory and info.memory_minimum == 256 * M and info.memory_buffer == 30


def test_saved_vm_shows_saved_and_refuses_changes(tmp_path: Path) -> None:
    from nestor.service import Service, VMState

    service = Service(tmp_path / "home")
    service.core.vms.add(cfg(name="s"))
    vm_dir = service.core.home.vm_dir(1)
    vm_dir.mkdir(parents=True)
    files = paths.VMFiles(vm_dir)
    files.saved_state.write_bytes(b"x")
    files.saved_meta.write_text('{"room": 536870912}')
    assert service.vm_show("s").state is VMState.SAVED
    assert memory.saved(files) == memory.Saved(files.saved_state, 512 * M)
    with pytest.raises(StateError, match="is saved"):
        service.vm_set_memory("s", MemoryChange(startup=G))
    service.vm_remove("s")
    assert not vm_dir.exists()


# -- argv -------------------------------------------------------------------------------------
def test_argv_restore_golden() -> None:
    spec = LaunchSpec(name="web1", vm_dir=Path("/h/vms/1"), accel="tcg", cpu_model="max,svm=off", vcpus=1,
                      memory=768 * M, kernel=Path("/h/images/kernel/vmlinux"), incoming=True)
    text = "\n".join(build(spec)) + "\n"
    golden = GOLDEN / "argv_memory_restore.txt"
    if os.environ.get("NESTOR_REGOLD"):
        golden.write_text(text)
    assert text == golden.read_text()
    argv = build(spec)
    assert argv[argv.index("-m") + 1] == "768M" and argv[argv.index("-incoming") + 1] == "defer"
    assert "-incoming" not in build(replace(spec, incoming=False))
