"""The dynamic-memory balancer: one small supervisor process per VM with dynamic memory.

    python -m nestor.balancer VM_DIR

`vm start` starts it detached (its own session, pidfile and log in the VM's directory); it
exits by itself when the VM's QEMU exits or its QMP socket goes away, and `vm stop` ends it.
QEMU's QMP socket admits one client at a time and other nestor commands use it too, so every
cycle connects, does its work and disconnects; a busy socket just skips the cycle.

Each cycle: R7 first (a VM with nesting exposed is asked `service.hypervisor_running`; while a
hypervisor runs inside, memory is held still and the reason logged), then the guest's memory
report (virtio-balloon guest-stats) goes into policy.memory.decide, and its target, if any,
into QMP `balloon`. The configuration is re-read every cycle, so set-memory applies live.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from . import memory, paths
from .engine import process
from .engine.qmp import Monitor
from .errors import EngineError
from .model import VMConfig
from .policy import memory as rules

QMP_TIMEOUT = 3.0  # a busy socket (another nestor command holds it) costs one cycle at most

log = logging.getLogger("nestor.balancer")


class Balancer:
    def __init__(self, vm_dir: Path) -> None:
        from .service import Nestor

        self.vm_dir = vm_dir
        self.service = Nestor(vm_dir.parent.parent)
        self.vm_id = int(vm_dir.name)
        # vm start set the balloon to startup just before starting us (memory.json says so)
        started = memory.read_json(vm_dir / memory.MEMORY_FILE)
        self.pending: int | None = started.get("target")
        self.last_change: float | None = time.time() if self.pending else None
        self.last_reason = ""

    def config(self) -> VMConfig | None:
        return next((c for c in self.service.vms.all() if c.id == self.vm_id), None)

    def cycle(self, config: VMConfig) -> rules.Decision:
        hold = None
        if config.nested:  # without exposed extensions no hypervisor can run inside
            running, how = self.service.hypervisor_running(config)
            if running:
                hold = (f"a hypervisor is running inside vm '{config.name}' (nested virtualization, rule R7; {how}): "
                        "memory stays still until it stops")
            elif running is None:
                hold = f"cannot tell whether a hypervisor runs inside ({how})"
        plan = rules.resolve(config)
        with Monitor(self.vm_dir / paths.QMP_SOCK, config.name, timeout=QMP_TIMEOUT) as mon:
            if mon.balloon_stats_interval() != rules.STATS_INTERVAL:
                mon.set_balloon_stats_interval(rules.STATS_INTERVAL)  # re-arms QEMU's timer: only when it differs
            stats = mon.balloon_stats()
            mem = rules.GuestMemory(actual=mon.balloon_actual(), total=stats.total, available=stats.available,
                                    reported_at=float(stats.last_update))
            decision = rules.decide(plan, mem, time.time(), self.last_change, hold, self.pending)
            if decision.target is not None:
                mon.balloon(decision.target)
                self.last_change = time.time()
                self.pending = decision.target
        self._report(decision, mem)
        return decision

    def _report(self, decision: rules.Decision, mem: rules.GuestMemory) -> None:
        if decision.target is not None or (decision.held and decision.reason != self.last_reason):
            log.info("%s (had %dM, demand %sM)", decision.reason, mem.actual >> 20,
                     "?" if mem.demand is None else mem.demand >> 20)
        self.last_reason = decision.reason
        status = {"state": "holding" if decision.held else "balancing", "reason": decision.reason,
                  "actual": mem.actual, "demand": mem.demand, "target": decision.target, "time": time.time()}
        tmp = self.vm_dir / (memory.BALANCER_STATUS + ".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(self.vm_dir / memory.BALANCER_STATUS)

    def run(self) -> int:
        qemu = process.live_pid(self.vm_dir)
        log.info("balancer for %s started (qemu pid %s)", self.vm_dir, qemu)
        while True:
            if qemu is None or process.live_pid(self.vm_dir) != qemu or not (self.vm_dir / paths.QMP_SOCK).exists():
                log.info("qemu is gone: balancer exits")
                return 0
            config = self.config()
            if config is None:
                log.info("the vm was removed: balancer exits")
                return 0
            started = time.monotonic()
            try:
                self.cycle(config)
            except EngineError as exc:
                log.debug("cycle skipped: %s", exc.message)  # busy socket, or QEMU exiting
            except Exception:
                log.exception("cycle failed")
            time.sleep(max(0.05, rules.CYCLE - (time.monotonic() - started)))


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m nestor.balancer VM_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _exit)
    vm_dir = Path(args[0]).resolve()
    try:
        return Balancer(vm_dir).run()
    finally:
        pidfile = vm_dir / memory.BALANCER_PID
        try:
            if int(pidfile.read_text().strip()) == os.getpid():
                pidfile.unlink()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    sys.exit(main())
