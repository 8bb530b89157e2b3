"""Memory use cases: `vm set-memory`, `vm save` and restore, the balancer's lifecycle.

The rules are in policy/memory.py; the QMP commands in engine/qmp.py. service.py calls
`room` (QEMU's -m), `after_spawn` (once QEMU listens), `on_stopped` and `info_fields`.

Files this module keeps in a VM's directory, next to paths.py's runtime files: saved.state,
saved.json, memory.json, balancer.pid, balancer.log, balancer.json (named below).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import paths, pids
from .engine import process
from .engine.qmp import Monitor
from .errors import EngineError, InvalidInput, StateError, error_context
from .model import VMConfig, VMState, format_size, validate_name
from .policy import memory as rules
from .state.lock import vm_lock

if TYPE_CHECKING:
    from .service import Nestor

SAVED_STATE = "saved.state"  # the guest's state (QEMU's migration stream), while the VM is saved
SAVED_META = "saved.json"  # what restore needs to start the same QEMU: the memory room
SAVING = "saved.state.part"  # being written; never restored
MEMORY_FILE = "memory.json"  # the room the running QEMU was started with
BALANCER_PID = "balancer.pid"
BALANCER_LOG = "balancer.log"
BALANCER_STATUS = "balancer.json"  # the balancer's last decision, for `vm show`

SAVE_FD = "nestor-save"
RESTORE_FD = "nestor-restore"
MIGRATION_TIMEOUT = 300.0
RESIZE_WAIT = 15.0  # a runtime resize waits this long for the guest to follow the balloon
STATIC_STATS_INTERVAL = 2  # seconds: static VMs report too, so a shrink can be checked at once
BALANCER_START_TIMEOUT = 5.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saved:
    path: Path
    room: int  # QEMU's -m when it was saved; restore must use the same


def room(config: VMConfig) -> int:
    return rules.resolve(config).room


def saved(vm_dir: Path) -> Saved | None:
    path = vm_dir / SAVED_STATE
    if not path.exists():
        return None
    try:
        meta = json.loads((vm_dir / SAVED_META).read_text())
        return Saved(path, int(meta["room"]))
    except (OSError, ValueError, KeyError) as exc:
        raise StateError(f"saved state {path} has no readable {SAVED_META}: {exc}",
                         hint=f"remove {path} to start the VM afresh") from exc


def refuse_if_saved(vm_dir: Path, name: str, what: str) -> None:
    """A saved VM must come back exactly as it was saved: its configuration is frozen."""
    if (vm_dir / SAVED_STATE).exists():
        raise StateError(f"vm '{name}' is saved: {what} can only change once it is started or its saved state discarded",
                         hint=f"nestor vm start {name} resumes it; nestor vm stop {name} --turn-off discards it")


def discard_saved(vm_dir: Path) -> bool:
    """Hyper-V's "Delete Saved State": the VM will boot afresh. True if there was one."""
    found = (vm_dir / SAVED_STATE).exists()
    for name in (SAVED_STATE, SAVED_META, SAVING):
        (vm_dir / name).unlink(missing_ok=True)
    return found


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _running_room(vm_dir: Path, config: VMConfig) -> int:
    return int(read_json(vm_dir / MEMORY_FILE).get("room") or room(config))


# -- start and stop hooks ---------------------------------------------------------------------
def after_spawn(service: Nestor, config: VMConfig, qemu_room: int, restore: Saved | None) -> None:
    """QEMU listens: restore a saved VM, set the balloon to startup, start the balancer."""
    vm_dir = service.home.vm_dir(config.id)
    plan = rules.resolve(config)
    target = plan.startup if restore is None and qemu_room > plan.startup else None
    _write_json(vm_dir / MEMORY_FILE, {"room": qemu_room, "target": target})
    if restore is not None:
        _restore(service, config, restore)
    if target is None and not plan.dynamic:
        return  # static, no headroom: nothing to set; stats are armed when a resize needs them
    interval = rules.STATS_INTERVAL if plan.dynamic else STATIC_STATS_INTERVAL
    try:
        with Monitor(vm_dir / paths.QMP_SOCK, config.name) as mon:
            if target is not None:
                mon.balloon(target)  # taken back as soon as the guest's driver loads
            mon.set_balloon_stats_interval(interval)
    except EngineError as exc:
        log.warning("vm '%s': cannot set up the balloon: %s", config.name, exc.message)
    if plan.dynamic:
        start_balancer(vm_dir)


def on_stopped(vm_dir: Path) -> None:
    """QEMU is gone: end the balancer (it would exit by itself within a cycle) and its files."""
    stop_balancer(vm_dir)
    for name in (MEMORY_FILE, BALANCER_STATUS):
        (vm_dir / name).unlink(missing_ok=True)


def balancer_pid(vm_dir: Path) -> int | None:
    """The live balancer of this VM, checked by its command line (a recycled PID is not ours)."""
    return pids.pid_from(vm_dir / BALANCER_PID, "nestor.balancer", str(vm_dir.resolve()))


def start_balancer(vm_dir: Path) -> int:
    """`python -m nestor.balancer VM_DIR`, detached: it outlives the CLI and ends with QEMU."""
    pid = balancer_pid(vm_dir)
    if pid is not None:
        return pid
    with open(vm_dir / BALANCER_LOG, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nestor.balancer", str(vm_dir.resolve())],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True,
        )
    (vm_dir / BALANCER_PID).write_text(f"{proc.pid}\n")
    return proc.pid


def stop_balancer(vm_dir: Path) -> None:
    pid = balancer_pid(vm_dir)
    if pid is not None:
        pids.terminate(pid, BALANCER_START_TIMEOUT)
    (vm_dir / BALANCER_PID).unlink(missing_ok=True)


# -- vm show ----------------------------------------------------------------------------------
def info_fields(service: Nestor, config: VMConfig, running: bool, detail: bool) -> dict[str, Any]:
    """The memory part of VMInfo; `state` is "saved" for an Off VM with a saved state."""
    vm_dir = service.home.vm_dir(config.id)
    plan = rules.resolve(config)
    fields: dict[str, Any] = {
        "dynamic_memory": plan.dynamic,
        "memory_minimum": format_size(plan.minimum) if plan.dynamic else None,
        "memory_maximum": format_size(plan.maximum),
        "memory_buffer": plan.buffer if plan.dynamic else None,
    }
    if not running:
        if (vm_dir / SAVED_STATE).exists():
            fields["state"] = "saved"
        return fields
    fields["memory_room"] = format_size(_running_room(vm_dir, config))
    if plan.dynamic:
        status = read_json(vm_dir / BALANCER_STATUS)
        if balancer_pid(vm_dir) is None:
            # Reconcile: a nestor killed between spawning QEMU and starting the balancer (or a
            # balancer that died) leaves a dynamic VM unbalanced; the next command restarts it.
            start_balancer(vm_dir)
            status = {"reason": "restarted"}
        fields["memory_balancer"] = status.get("reason") or "starting"
    if detail:
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, config.name, timeout=3.0) as mon:
                fields["memory_assigned"] = format_size(-(-mon.balloon_actual() // rules.MiB) * rules.MiB)
                mem = _guest_memory(mon)
        except EngineError:
            return fields  # busy (one QMP client at a time) or the guest has no balloon driver
        if mem.demand is not None:
            fields["memory_demand"] = format_size(-(-mem.demand // rules.MiB) * rules.MiB)
    return fields


def _guest_memory(mon: Monitor) -> rules.GuestMemory:
    stats = mon.balloon_stats()
    return rules.GuestMemory(actual=mon.balloon_actual(), total=stats.total, available=stats.available,
                             reported_at=float(stats.last_update))


def _fresh_guest_memory(mon: Monitor, wait: float = 6.0) -> rules.GuestMemory:
    """A report made from now on (the guest reports every few seconds once polling is on)."""
    asked = time.time()
    if mon.balloon_stats_interval() == 0:
        mon.set_balloon_stats_interval(STATIC_STATS_INTERVAL)
    deadline = time.monotonic() + wait
    mem = _guest_memory(mon)
    while mem.reported_at < int(asked) and time.monotonic() < deadline:
        time.sleep(0.2)
        mem = _guest_memory(mon)
    return mem


# -- vm set-memory ----------------------------------------------------------------------------
def set_memory(service: Nestor, name: str, startup: int | None = None, dynamic: bool | None = None,
               minimum: int | None = None, maximum: int | None = None, buffer: int | None = None) -> str:
    """Hyper-V's Set-VMMemory. Off: the configuration changes. Running: R7, then a live resize."""
    config = service.vms.get(validate_name(name))
    if startup is None and dynamic is None and minimum is None and maximum is None and buffer is None:
        raise InvalidInput("nothing to change",
                           hint="give --startup, --dynamic on|off, --minimum, --maximum or --buffer")
    new = rules.change(config, startup, dynamic, minimum, maximum, buffer)
    rules.validate(new, service.facts.mem_total)
    vm_dir = service.home.vm_dir(config.id)
    with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
        state, _ = service.observe(config)
        if state is VMState.OFF:
            refuse_if_saved(vm_dir, name, "its memory")
            service.vms.update(new)
            return f"vm '{name}' memory updated"
        if state is VMState.PAUSED:
            raise StateError(f"vm '{name}' is paused: its memory cannot change now", hint="resume it, or stop it")
        if config.nested:  # without exposed extensions no hypervisor can run inside (svm is hidden)
            running, how = service.hypervisor_running(config)
            rules.check_no_hypervisor(name, running, how)
        rules.check_live_change(name, config, new, _running_room(vm_dir, config))
        message = f"vm '{name}' memory updated"
        if not new.dynamic_memory and new.memory != config.memory:
            message = _resize(vm_dir, name, new.memory)
        service.vms.update(new)
        return message


def _resize(vm_dir: Path, name: str, target: int) -> str:
    """Move a running static VM's balloon to `target`; refuse to shrink below the guest's use."""
    with Monitor(vm_dir / paths.QMP_SOCK, name) as mon:
        actual = mon.balloon_actual()
        if target < actual:
            rules.check_shrink(name, target, _fresh_guest_memory(mon))
        mon.balloon(target)
        deadline = time.monotonic() + RESIZE_WAIT
        while abs(actual - target) >= rules.MiB and time.monotonic() < deadline:
            time.sleep(0.2)
            actual = mon.balloon_actual()
    if abs(actual - target) >= rules.MiB:
        return (f"vm '{name}' memory set to {format_size(target)}; the guest has "
                f"{actual >> 20}M so far and keeps moving toward it")
    return f"vm '{name}' memory is now {format_size(target)}"


# -- vm save / restore ------------------------------------------------------------------------
def save(service: Nestor, name: str) -> Path:
    """Hyper-V's Save-VM: the guest's state to a file through QMP fd migration, then QEMU exits.

    QEMU runs with -sandbox spawn=deny (no exec: URI) and 7.2 has no file: URI, so nestor opens
    the file and passes its descriptor over the QMP socket (SCM_RIGHTS, `getfd`).
    """
    config = service.vms.get(validate_name(name))
    vm_dir = service.home.vm_dir(config.id)
    with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
        pid = process.live_pid(vm_dir)
        if pid is None:
            if (vm_dir / SAVED_STATE).exists():
                raise StateError(f"vm '{name}' is already saved", hint=f"nestor vm start {name} resumes it")
            raise StateError(f"vm '{name}' is not running", hint=f"nestor vm start {name}")
        if config.nested:
            running, how = service.hypervisor_running(config)
            rules.check_save(name, running, how)
        stop_balancer(vm_dir)
        qemu_room = _running_room(vm_dir, config)
        part = vm_dir / SAVING
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, name) as mon:
                was_running = mon.status() == "running"
                mon.pause()
                try:
                    mon.send_fd(fd, SAVE_FD)
                    mon.migrate(f"fd:{SAVE_FD}")
                    _wait_migration(mon, name, "save")
                    os.fsync(fd)
                except BaseException:
                    if was_running:
                        mon.resume()
                    if config.dynamic_memory:
                        start_balancer(vm_dir)
                    raise
                _write_json(vm_dir / SAVED_META, {"room": qemu_room, "saved_at": time.time()})
                part.replace(vm_dir / SAVED_STATE)
                mon.quit()
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        if not process.wait_exit(pid, process.EXIT_TIMEOUT):
            process.terminate(pid)
        service._stopped(config)
    return vm_dir / SAVED_STATE


def _wait_migration(mon: Monitor, name: str, what: str) -> None:
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    delay = 0.02
    while True:
        info = mon.migration()
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise EngineError(f"vm '{name}': {what} failed: {info.get('error-desc', status)}",
                              hint=f"see {mon.sock.parent / paths.QEMU_LOG}")
        if time.monotonic() > deadline:
            raise EngineError(f"vm '{name}': {what} did not finish within {MIGRATION_TIMEOUT:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _restore(service: Nestor, config: VMConfig, state: Saved) -> None:
    """QEMU waits with -incoming defer: feed it the saved stream, then let the guest run on.

    On failure QEMU is ended and the saved state kept, so nothing is lost and start can be retried."""
    vm_dir = service.home.vm_dir(config.id)
    try:
        fd = os.open(state.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, config.name) as mon:
                mon.send_fd(fd, RESTORE_FD)
                mon.migrate_incoming(f"fd:{RESTORE_FD}")
                _wait_migration(mon, config.name, "restore")
                mon.resume()
        finally:
            os.close(fd)
    except BaseException:
        pid = process.live_pid(vm_dir)
        if pid is not None:
            process.terminate(pid)
        process.clean_runtime_files(vm_dir)
        raise
    state.path.unlink()
    (vm_dir / SAVED_META).unlink(missing_ok=True)
