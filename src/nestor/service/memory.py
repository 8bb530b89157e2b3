"""Memory use cases: `vm set-memory`, `vm save` and restore, the balancer's hooks.

The rules are in policy/memory.py; the QMP commands in engine/qmp.py. vms.py calls
`room` (QEMU's -m), `after_spawn` (once QEMU listens), `on_stopped` and `info_fields`.
The balancer itself runs in the home's daemon (`nestor serve`, service/daemon.py), which
`after_spawn` starts on demand. Every file is named in paths.py.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..engine import process
from ..engine.qmp import Monitor
from ..errors import EngineError, InvalidInput, StateError, error_context
from ..model import VMConfig, VMState, validate_name
from ..policy import memory as rules
from ..state.lock import vm_lock
from . import daemon
from .core import Core
from .types import MemoryChange, MemoryOutcome, MemoryResult, SaveResult

SAVE_FD = "nestor-save"
RESTORE_FD = "nestor-restore"
MIGRATION_TIMEOUT = 300.0
RESIZE_WAIT = 15.0  # a runtime resize waits this long for the guest to follow the balloon
STATIC_STATS_INTERVAL = 2  # seconds: static VMs report too, so a shrink can be checked at once

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


@dataclass(frozen=True)
class Saved:
    path: Path
    room: int  # QEMU's -m when it was saved; restore must use the same


def room(config: VMConfig) -> int:
    return rules.resolve(config).room


def saved(files: paths.VMFiles) -> Saved | None:
    path = files.saved_state
    if not path.exists():
        return None
    try:
        meta = json.loads(files.saved_meta.read_text())
        return Saved(path, int(meta["room"]))
    except (OSError, ValueError, KeyError) as exc:
        raise StateError(f"saved state {path} has no readable {paths.SAVED_META}: {exc}",
                         hint=f"remove {path} to start the VM afresh") from exc


def is_saved(files: paths.VMFiles) -> bool:
    return files.saved_state.exists()


def refuse_if_saved(files: paths.VMFiles, name: str, what: str) -> None:
    """A saved VM must come back exactly as it was saved: its configuration is frozen."""
    if is_saved(files):
        raise StateError(f"vm '{name}' is saved: {what} can only change once it is started or its saved state discarded",
                         hint=f"nestor vm start {name} resumes it; nestor vm stop {name} --turn-off discards it")


def discard_saved(files: paths.VMFiles) -> bool:
    """Hyper-V's "Delete Saved State": the VM will boot afresh. True if there was one."""
    found = is_saved(files)
    for path in (files.saved_state, files.saved_meta, files.saving):
        path.unlink(missing_ok=True)
    return found


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def running_room(files: paths.VMFiles, config: VMConfig) -> int:
    return int(read_json(files.memory).get("room") or room(config))


# -- start and stop hooks ---------------------------------------------------------------------
def after_spawn(core: Core, config: VMConfig, qemu_room: int, restore: Saved | None) -> None:
    """QEMU listens: restore a saved VM, set the balloon to startup, make sure the balancer runs."""
    files = core.files(config)
    plan = rules.resolve(config)
    target = plan.startup if restore is None and qemu_room > plan.startup else None
    write_json(files.memory, {"room": qemu_room, "target": target})
    if restore is not None:
        _restore(core, config, restore)
    if target is None and not plan.dynamic:
        return  # static, no headroom: nothing to set; stats are armed when a resize needs them
    interval = rules.STATS_INTERVAL if plan.dynamic else STATIC_STATS_INTERVAL
    try:
        with Monitor(files.qmp_sock, config.name) as mon:
            if target is not None:
                mon.balloon(target)  # taken back as soon as the guest's driver loads
            mon.set_balloon_stats_interval(interval)
    except EngineError as exc:
        log.warning("vm '%s': cannot set up the balloon: %s", config.name, exc.message)
    if plan.dynamic:
        daemon.ensure_running(core.home)


def on_stopped(files: paths.VMFiles) -> None:
    """QEMU is gone: the balancer (in the daemon) forgets it with its files."""
    for path in (files.memory, files.balancer_status):
        path.unlink(missing_ok=True)


# -- vm show ----------------------------------------------------------------------------------
def info_fields(core: Core, config: VMConfig, running: bool, detail: bool) -> dict[str, Any]:
    """The memory part of VMInfo (bytes); `state` is SAVED for an Off VM with a saved state."""
    files = core.files(config)
    plan = rules.resolve(config)
    fields: dict[str, Any] = {
        "dynamic_memory": plan.dynamic,
        "memory_minimum": plan.minimum if plan.dynamic else None,
        "memory_maximum": plan.maximum,
        "memory_buffer": plan.buffer if plan.dynamic else None,
    }
    if not running:
        if is_saved(files):
            fields["state"] = VMState.SAVED
        return fields
    fields["memory_room"] = running_room(files, config)
    if plan.dynamic:
        status = read_json(files.balancer_status)
        if daemon.running_pid(core.home) is None:
            # Reconcile: a nestor killed between spawning QEMU and starting the daemon (or a daemon
            # that died) leaves a dynamic VM unbalanced; the next command starts it again.
            daemon.ensure_running(core.home)
            status = {"reason": "restarted"}
        fields["memory_balancer"] = status.get("reason") or "starting"
    if detail:
        try:
            with Monitor(files.qmp_sock, config.name, timeout=3.0) as mon:
                fields["memory_assigned"] = -(-mon.balloon_actual() // rules.MiB) * rules.MiB
                mem = guest_memory(mon)
        except EngineError:
            return fields  # busy (one QMP client at a time) or the guest has no balloon driver
        if mem.demand is not None:
            fields["memory_demand"] = -(-mem.demand // rules.MiB) * rules.MiB
    return fields


def guest_memory(mon: Monitor) -> rules.GuestMemory:
    stats = mon.balloon_stats()
    return rules.GuestMemory(actual=mon.balloon_actual(), total=stats.total, available=stats.available,
                             reported_at=float(stats.last_update))


def _fresh_guest_memory(mon: Monitor, wait: float = 6.0) -> rules.GuestMemory:
    """A report made from now on (the guest reports every few seconds once polling is on)."""
    asked = time.time()
    if mon.balloon_stats_interval() == 0:
        mon.set_balloon_stats_interval(STATIC_STATS_INTERVAL)
    deadline = time.monotonic() + wait
    mem = guest_memory(mon)
    while mem.reported_at < int(asked) and time.monotonic() < deadline:
        time.sleep(0.2)
        mem = guest_memory(mon)
    return mem


# -- vm set-memory ----------------------------------------------------------------------------
def set_memory(core: Core, name: str, change: MemoryChange) -> MemoryResult:
    """Hyper-V's Set-VMMemory. Off: the configuration changes. Running: R7, then a live resize."""
    config = core.vms.get(validate_name(name))
    if change.empty():
        raise InvalidInput("nothing to change",
                           hint="give --startup, --dynamic on|off, --minimum, --maximum or --buffer")
    rules.validate(rules.change(config, change.startup, change.dynamic, change.minimum, change.maximum,
                                change.buffer), core.facts.mem_total)
    files = core.files(config)
    with error_context(vm=name), vm_lock(files.lock, name):
        config = core.vms.get(name)  # read again under the lock: no lost update
        new = rules.change(config, change.startup, change.dynamic, change.minimum, change.maximum, change.buffer)
        rules.validate(new, core.facts.mem_total)
        state, _ = core.observe(config)
        if state is VMState.OFF:
            refuse_if_saved(files, name, "its memory")
            core.vms.update(new)
            return MemoryResult(name, MemoryOutcome.UPDATED)
        if state is VMState.PAUSED:
            raise StateError(f"vm '{name}' is paused: its memory cannot change now", hint="resume it, or stop it")
        if config.nested:  # without exposed extensions no hypervisor can run inside (svm is hidden)
            running, how = core.hypervisor_running(config)
            rules.check_no_hypervisor(name, running, how)
        rules.check_live_change(name, config, new, running_room(files, config))
        result = MemoryResult(name, MemoryOutcome.UPDATED)
        if not new.dynamic_memory and new.memory != config.memory:
            result = _resize(files, name, new.memory)
        core.vms.update(new)
        if new.dynamic_memory:
            daemon.ensure_running(core.home)
        return result


def _resize(files: paths.VMFiles, name: str, target: int) -> MemoryResult:
    """Move a running static VM's balloon to `target`; refuse to shrink below the guest's use."""
    with Monitor(files.qmp_sock, name) as mon:
        actual = mon.balloon_actual()
        if target < actual:
            rules.check_shrink(name, target, _fresh_guest_memory(mon))
        mon.balloon(target)
        deadline = time.monotonic() + RESIZE_WAIT
        while abs(actual - target) >= rules.MiB and time.monotonic() < deadline:
            time.sleep(0.2)
            actual = mon.balloon_actual()
    arrived = abs(actual - target) < rules.MiB
    return MemoryResult(name, MemoryOutcome.RESIZED if arrived else MemoryOutcome.RESIZING, target, actual)


# -- vm save / restore ------------------------------------------------------------------------
def save(core: Core, name: str, stopped: Callable[[VMConfig], None]) -> SaveResult:
    """Hyper-V's Save-VM: the guest's state to a file through QMP fd migration, then QEMU exits.

    QEMU runs with -sandbox spawn=deny (no exec: URI) and 7.2 has no file: URI, so nestor opens
    the file and passes its descriptor over the QMP socket (SCM_RIGHTS, `getfd`). `stopped` is
    the lifecycle's hook for a QEMU that has gone (runtime files, taps).
    """
    config = core.vms.get(validate_name(name))
    files = core.files(config)
    with error_context(vm=name), vm_lock(files.lock, name):
        pid = process.live_pid(files.dir)
        if pid is None:
            if is_saved(files):
                raise StateError(f"vm '{name}' is already saved", hint=f"nestor vm start {name} resumes it")
            raise StateError(f"vm '{name}' is not running", hint=f"nestor vm start {name}")
        if config.nested:
            running, how = core.hypervisor_running(config)
            rules.check_save(name, running, how)
        qemu_room = running_room(files, config)
        part = files.saving
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            with Monitor(files.qmp_sock, name) as mon:
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
                    raise
                write_json(files.saved_meta, {"room": qemu_room, "saved_at": time.time()})
                part.replace(files.saved_state)
                mon.quit()
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        if not process.wait_exit(pid, process.EXIT_TIMEOUT):
            process.terminate(pid)
        stopped(config)
    return SaveResult(name, str(files.saved_state), files.saved_state.stat().st_size)


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


def _restore(core: Core, config: VMConfig, state: Saved) -> None:
    """QEMU waits with -incoming defer: feed it the saved stream, then let the guest run on.

    On failure QEMU is ended and the saved state kept, so nothing is lost and start can be retried."""
    files = core.files(config)
    try:
        fd = os.open(state.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with Monitor(files.qmp_sock, config.name) as mon:
                mon.send_fd(fd, RESTORE_FD)
                mon.migrate_incoming(f"fd:{RESTORE_FD}")
                _wait_migration(mon, config.name, "restore")
                mon.resume()
        finally:
            os.close(fd)
    except BaseException:
        pid = process.live_pid(files.dir)
        if pid is not None:
            process.terminate(pid)
        process.clean_runtime_files(files.dir)
        raise
    state.path.unlink()
    files.saved_meta.unlink(missing_ok=True)
