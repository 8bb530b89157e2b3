"""``vm checkpoint new/list/apply/remove`` (Hyper-V's Checkpoint-VM, Get-VMCheckpoint,
Restore-VMCheckpoint, Remove-VMCheckpoint) as qcow2 internal snapshots.

* A stopped VM: ``qemu-img snapshot -c/-a/-d`` on every disk (disk state only).
* A running VM: QMP ``snapshot-save`` / ``snapshot-load`` / ``snapshot-delete`` jobs
  (QEMU >= 6.0) over all its disks, the memory (vmstate) going into the root disk. Applying
  one brings back the running guest as it was, memory included.

A checkpoint with memory can only be applied to the running VM; one without memory (taken
while off) only to the stopped VM. While a hypervisor runs inside the VM, checkpoints of the
running VM are refused (R12-R14, :mod:`nestor.policy.checkpoints`).

Each checkpoint records the VM's TPM setting (``VMDIR/checkpoint-settings/NAME.json``), and
applying it gives the VM that setting back, as Hyper-V restores a checkpoint's security settings
(:func:`nestor.policy.tpm.on_apply`). A running VM whose TPM setting differs from the checkpoint's
is restarted with the checkpoint's devices before its memory is loaded. The TPM's own state goes
with the checkpoint: inside the vmstate for a running VM's (QEMU's tpm-emulator migrates it), a
copy beside the disks' snapshots for a stopped VM's (``VMDIR/tpm-checkpoints/NAME``).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..engine import process, swtpm
from ..engine.qmp import Monitor
from ..errors import Conflict, EngineError, HostError, InvalidInput, NotFound, StateError, error_context
from ..files import private_dir, write_private
from ..model import VMConfig, VMState, validate_name
from ..policy import tpm as tpm_rules
from ..policy.checkpoints import check_checkpoint
from ..state.lock import vm_lock
from . import disks, memory
from .guest_types import CheckpointInfo, CheckpointResult

if TYPE_CHECKING:
    from .core import Core

JOB_TIMEOUT = 600.0


def _disks(core: Core, config: VMConfig) -> list[disks.DiskRow]:
    rows = disks.DiskRepo(core.conn).of_vm(config.id)
    if not rows:
        raise InvalidInput(f"vm '{config.name}' has no qcow2 disks: checkpoints are for disk-image VMs",
                           hint="make the VM from an image: nestor vm new NAME --image IMAGE")
    return disks.checked(core, config, rows)


def _root(rows: list[disks.DiskRow]) -> disks.DiskRow:
    return next((d for d in rows if d.name == disks.ROOT), rows[0])


def listing(core: Core, vm: str) -> list[CheckpointInfo]:
    config = core.vms.get(validate_name(vm))
    root = _root(_disks(core, config))
    vm_dir = core.vm_dir(config)
    return [_row(snap, vm_dir) for snap in disks.info(root.file).get("snapshots", [])]


def _row(snap: dict[str, Any], vm_dir: Path) -> CheckpointInfo:
    vmstate = int(snap.get("vm-state-size", 0))
    name = str(snap.get("name"))
    return CheckpointInfo(name=name, created=float(snap.get("date-sec", 0)),
                          memory=vmstate > 0, memory_size=vmstate, tpm=_recorded_tpm(vm_dir, name))


def _find(core: Core, config: VMConfig, name: str) -> dict[str, Any] | None:
    root = _root(_disks(core, config))
    return next((s for s in disks.info(root.file).get("snapshots", []) if s.get("name") == name), None)


def _guard(core: Core, config: VMConfig, action: str) -> None:
    if not config.nested:
        return  # with the extensions hidden nothing can run inside
    running, how = core.hypervisor_running(config)
    check_checkpoint(config.name, action, running, how)


def _check_new(core: Core, config: VMConfig, name: str, running: bool) -> list[disks.DiskRow]:
    """Everything that refuses `checkpoint new` (bad input, a taken name, R12-R14), before any work."""
    rows = _disks(core, config)
    if _find(core, config, name) is not None:
        raise Conflict(f"vm '{config.name}' already has a checkpoint '{name}'", hint="choose another name")
    if running:
        _guard(core, config, "taken")
    return rows


def _check_apply(core: Core, config: VMConfig, name: str, running: bool) -> list[disks.DiskRow]:
    """Everything that refuses `checkpoint apply` (unknown, the wrong VM state for it, R12-R14)."""
    vm = config.name
    rows = _disks(core, config)
    snap = _find(core, config, name)
    if snap is None:
        raise NotFound(f"vm '{vm}' has no checkpoint '{name}'", hint=f"nestor vm checkpoint list {vm}")
    with_memory = int(snap.get("vm-state-size", 0)) > 0
    if running and not with_memory:
        raise StateError(f"checkpoint '{name}' was taken while vm '{vm}' was off (no memory in it)",
                         hint=f"stop the VM to apply it: nestor vm stop {vm}")
    if not running and with_memory:
        raise StateError(f"checkpoint '{name}' holds vm '{vm}''s memory: it is applied to the running VM",
                         hint=f"nestor vm start {vm}, then apply it")
    if running:
        _guard(core, config, "applied")
    restore = tpm_rules.on_apply(_recorded_tpm(core.vm_dir(config), name), config.tpm)
    if restore is not None:
        _check_tpm_restore(core, config, restore, running)
    return rows


_CHECKS = {"new": _check_new, "apply": _check_apply}
_ONLINE = {"new": "snapshot-save", "apply": "snapshot-load"}  # QMP jobs on a running VM
_OFFLINE = {"new": ("-c", "checkpoint of disk"), "apply": ("-a", "applying to disk")}  # qemu-img snapshot


def check(core: Core, vm: str, name: str, action: str) -> None:
    """Would `new` (action 'new') or `apply` ('apply') be refused now? Raises what they would raise.

    For front ends that answer a refusal at once and run the work later (the API's operations);
    the work checks again under the VM's lock."""
    validate_name(name, "checkpoint")
    config = core.vms.get(validate_name(vm))
    if action not in _CHECKS:
        raise InvalidInput(f"unknown checkpoint action '{action}'", hint="new or apply")
    running = process.live_pid(core.vm_dir(config)) is not None
    with error_context(vm=vm):
        _CHECKS[action](core, config, name, running)


def new(core: Core, vm: str, name: str) -> CheckpointResult:
    return _take_or_apply(core, vm, name, "new")


def apply(core: Core, vm: str, name: str) -> CheckpointResult:
    return _take_or_apply(core, vm, name, "apply")


def _take_or_apply(core: Core, vm: str, name: str, action: str) -> CheckpointResult:
    """Checkpoint-VM or Restore-VMCheckpoint: checked and done under the VM's lock, on every disk;
    with QMP jobs (memory included) while the VM runs, with qemu-img while it is off."""
    validate_name(name, "checkpoint")
    config = core.vms.get(validate_name(vm))
    with error_context(vm=vm), vm_lock(core.files(config).lock, vm):
        vm_dir = core.vm_dir(config)
        running = process.live_pid(vm_dir) is not None
        rows = _CHECKS[action](core, config, name, running)
        restore = tpm_rules.on_apply(_recorded_tpm(vm_dir, name), config.tpm) if action == "apply" else None
        started = time.monotonic()
        if running:
            if restore is not None:
                config = _restart(core, config, restore)  # the checkpoint's memory needs its devices
            _job(core, config, _ONLINE[action], {"tag": name, "vmstate": f"n-{_root(rows).drive_id}",
                                                 "devices": [f"n-{d.drive_id}" for d in rows]})
        else:
            flag, label = _OFFLINE[action]
            for d in rows:
                disks.qemu_img(["snapshot", flag, name, str(d.file)], f"{label} '{d.name}'")
            if restore is not None:
                config = _set_tpm(core, config, restore)
            if config.tpm:
                _tpm_copy(vm_dir, name, action)
        if action == "new":
            _record(vm_dir, name, config)
        return CheckpointResult(vm, name, round(time.monotonic() - started, 2), tpm_restored=restore)


def _check_tpm_restore(core: Core, config: VMConfig, restore: bool, running: bool) -> None:
    """Refuse, before anything changes, a TPM setting applying the checkpoint could not give back."""
    if not running and memory.is_saved(core.files(config)):  # a saved VM resumes with its devices
        tpm_rules.check_change(config.name, VMState.SAVED, restore, disk_image=True, delete_state=False)
    if restore and shutil.which(swtpm.BINARY) is None:
        raise HostError(f"vm '{config.name}' had a TPM at this checkpoint, and swtpm is not installed to give it back",
                        hint="apt-get install swtpm swtpm-tools (scripts/setup)")


def _set_tpm(core: Core, config: VMConfig, on: bool) -> VMConfig:
    """The VM's TPM setting as the checkpoint's; turning it off keeps the live state (as `set-tpm --off`)."""
    if on and not swtpm.state_dir(core.vm_dir(config)).is_dir():
        swtpm.make_state(core.vm_dir(config), None)  # handed to the QEMU user at each start
    new = replace(config, tpm=on)
    core.vms.update(new)
    return new


def _restart(core: Core, config: VMConfig, tpm: bool) -> VMConfig:
    """Turn the running VM off and start it with the checkpoint's TPM setting (the lock held): its
    memory, about to be replaced by the checkpoint's, is lost either way. A start that fails leaves
    the VM off with its setting as before."""
    from .vms import VMs

    vms = VMs(core)
    pid = process.live_pid(core.vm_dir(config))
    if pid is not None:
        process.terminate(pid)
    vms.stopped(config)
    new = _set_tpm(core, config, tpm)
    try:
        vms.start_locked(new)
    except BaseException:
        core.vms.update(config)
        raise
    return new


SETTINGS = "checkpoint-settings"


def _settings_file(vm_dir: Path, name: str) -> Path:
    return vm_dir / SETTINGS / f"{name}.json"


def _record(vm_dir: Path, name: str, config: VMConfig) -> None:
    """What applying the checkpoint gives back besides disks and memory: the TPM setting."""
    private_dir(vm_dir / SETTINGS, parents=False)
    write_private(_settings_file(vm_dir, name), json.dumps({"tpm": config.tpm}) + "\n")


def _recorded_tpm(vm_dir: Path, name: str) -> bool | None:
    try:
        value = json.loads(_settings_file(vm_dir, name).read_text()).get("tpm")
    except (OSError, ValueError, AttributeError):
        return None  # a checkpoint from before nestor recorded it
    return value if isinstance(value, bool) else None


def remove(core: Core, vm: str, name: str) -> None:
    validate_name(name, "checkpoint")
    config = core.vms.get(validate_name(vm))
    vm_dir = core.vm_dir(config)
    with error_context(vm=vm), vm_lock(core.files(config).lock, vm):
        rows = _disks(core, config)
        if _find(core, config, name) is None:
            raise NotFound(f"vm '{vm}' has no checkpoint '{name}'", hint=f"nestor vm checkpoint list {vm}")
        if process.live_pid(vm_dir) is None:
            for d in rows:
                disks.qemu_img(["snapshot", "-d", name, str(d.file)], f"removing from disk '{d.name}'")
        else:
            _job(core, config, "snapshot-delete", {"tag": name, "devices": [f"n-{d.drive_id}" for d in rows]})
        shutil.rmtree(_tpm_saved(vm_dir, name), ignore_errors=True)
        _settings_file(vm_dir, name).unlink(missing_ok=True)


TPM_CHECKPOINTS = "tpm-checkpoints"


def _tpm_saved(vm_dir: Path, name: str) -> Path:
    return vm_dir / TPM_CHECKPOINTS / name


def _tpm_copy(vm_dir: Path, name: str, action: str) -> None:
    """A stopped VM's TPM state goes with its disks: copied beside them at `new`, back at `apply`.
    (A running VM's checkpoint holds the TPM in its vmstate: QEMU's tpm-emulator migrates it.)"""
    live, saved = swtpm.state_dir(vm_dir), _tpm_saved(vm_dir, name)
    if action == "new":
        shutil.rmtree(saved, ignore_errors=True)
        saved.parent.mkdir(mode=0o700, exist_ok=True)
        if live.is_dir():
            shutil.copytree(live, saved, symlinks=True, ignore=shutil.ignore_patterns(swtpm.SOCK, ".lock"))
    elif saved.is_dir():
        shutil.rmtree(live, ignore_errors=True)
        shutil.copytree(saved, live, symlinks=True)
        live.chmod(0o700)


def _job(core: Core, config: VMConfig, command: str, args: dict[str, Any]) -> None:
    """Run one snapshot job to its end; its error becomes an EngineError."""
    vm_dir = core.vm_dir(config)
    job_id = f"{command}-{int(time.time() * 1000)}"
    with Monitor(vm_dir / paths.QMP_SOCK, config.name, timeout=30.0) as mon:
        mon.execute(command, {"job-id": job_id, **args})
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            jobs = [j for j in mon.execute("query-jobs") if j.get("id") == job_id]
            if not jobs:
                raise EngineError(f"vm '{config.name}': the {command} job vanished")
            job = jobs[0]
            if job.get("status") == "concluded":
                break
            if time.monotonic() > deadline:
                raise EngineError(f"vm '{config.name}': {command} did not finish in {JOB_TIMEOUT:.0f} s")
            time.sleep(0.2)
        mon.execute("job-dismiss", {"id": job_id})
        if job.get("error"):
            raise EngineError(f"vm '{config.name}': {command} failed: {job['error']}")
        if mon.status() not in ("running", "paused"):
            mon.resume()
