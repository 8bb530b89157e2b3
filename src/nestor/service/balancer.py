"""The dynamic-memory balancer of every dynamic VM of a home, run by the home's daemon.

Each cycle (policy.memory.CYCLE) visits every running VM with dynamic memory. For each: R7
first (a VM with nesting exposed is asked `hypervisor_running`; while a hypervisor runs inside,
memory is held still and the reason reported), then the guest's memory report (virtio-balloon
guest-stats) goes into policy.memory.decide, and its target, if any, into QMP `balloon`.
The configuration is re-read every cycle, so set-memory applies live. QEMU's QMP socket admits
one client at a time and commands use it too, so a visit connects, works and disconnects; a
VM whose lock is held (a save, a stop) or whose socket is busy is skipped for one cycle.

Decisions go to `balancer.json` in the VM's directory (for `vm show`) and to `on_decision`
(the daemon's event stream).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..engine import process
from ..engine.qmp import Monitor
from ..errors import Conflict, EngineError
from ..model import VMConfig
from ..policy import memory as rules
from ..state.lock import file_lock
from . import memory
from .core import Core

QMP_TIMEOUT = 3.0  # a busy socket (another nestor command holds it) costs one cycle at most

log = logging.getLogger("nestor.balancer")
log.addHandler(logging.NullHandler())

OnDecision = Callable[[str, rules.Decision, rules.GuestMemory], None]


@dataclass
class _VMState:
    """What the balancer remembers of one VM between cycles (a few hundred bytes)."""

    qemu_pid: int
    pending: int | None
    last_change: float | None
    last_reason: str = ""


class Balancer:
    def __init__(self, core: Core, on_decision: OnDecision | None = None) -> None:
        self.core = core
        self.on_decision = on_decision
        self._vms: dict[int, _VMState] = {}
        self.last_active = time.monotonic()  # when a dynamic VM last ran (for --on-demand exit)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.cycle()
            except Exception:
                log.exception("balancer cycle failed")
            stop.wait(max(0.05, rules.CYCLE - (time.monotonic() - started)))

    def cycle(self) -> None:
        seen = set()
        for config in self.core.vms.all():
            if not config.dynamic_memory:
                continue
            pid = process.live_pid(self.core.vm_dir(config))
            if pid is None:
                continue
            seen.add(config.id)
            self.last_active = time.monotonic()
            state = self._vms.get(config.id)
            if state is None or state.qemu_pid != pid:
                # vm start set the balloon to startup just before (memory.json says so)
                target = memory.read_json(self.core.files(config).memory).get("target")
                state = _VMState(pid, target, time.time() if target else None)
                self._vms[config.id] = state
            try:
                with file_lock(self.core.files(config).lock, "", timeout=0):
                    self.visit(config, state)
            except Conflict:
                continue  # a lifecycle command holds the VM: next cycle
            except EngineError as exc:
                log.debug("vm '%s': cycle skipped: %s", config.name, exc.message)
        for vm_id in set(self._vms) - seen:
            del self._vms[vm_id]

    def visit(self, config: VMConfig, state: _VMState) -> rules.Decision:
        hold = None
        if config.nested:  # without exposed extensions no hypervisor can run inside
            running, how = self.core.hypervisor_running(config)
            if running:
                hold = (f"a hypervisor is running inside vm '{config.name}' (nested virtualization, rule R7; {how}): "
                        "memory stays still until it stops")
            elif running is None:
                hold = f"cannot tell whether a hypervisor runs inside ({how})"
        plan = rules.resolve(config)
        files = self.core.files(config)
        with Monitor(files.qmp_sock, config.name, timeout=QMP_TIMEOUT) as mon:
            if mon.balloon_stats_interval() != rules.STATS_INTERVAL:
                mon.set_balloon_stats_interval(rules.STATS_INTERVAL)  # re-arms QEMU's timer: only when it differs
            mem = memory.guest_memory(mon)
            decision = rules.decide(plan, mem, time.time(), state.last_change, hold, state.pending)
            if decision.target is not None:
                mon.balloon(decision.target)
                state.last_change = time.time()
                state.pending = decision.target
        if decision.target is not None or (decision.held and decision.reason != state.last_reason):
            log.info("vm '%s': %s (had %dM, demand %sM)", config.name, decision.reason, mem.actual >> 20,
                     "?" if mem.demand is None else mem.demand >> 20)
            if self.on_decision:
                with contextlib.suppress(Exception):
                    self.on_decision(config.name, decision, mem)
        state.last_reason = decision.reason
        memory.write_json(files.balancer_status, {
            "state": "holding" if decision.held else "balancing", "reason": decision.reason,
            "actual": mem.actual, "demand": mem.demand, "target": decision.target, "time": time.time()})
        return decision
