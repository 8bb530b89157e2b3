"""VM lifecycle use cases: new, start, stop, remove, processor and version changes.

Each multi-step host change runs under a Reverter (a failure half-way undoes what was done);
lifecycle steps on one VM hold its lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import bootplan, faults, paths
from ..engine import argv as qemu_argv
from ..engine import process, swtpm
from ..engine.qmp import Monitor
from ..errors import EngineError, InvalidInput, NestorError, StateError, error_context
from ..files import private_dir, write_private
from ..model import (
    CURRENT_CONFIG_VERSION,
    MAX_APPEND,
    BootSource,
    VMConfig,
    VMState,
    shown,
    validate_config_version,
    validate_name,
    validate_text,
)
from ..net import tapfd
from ..net.revert import Reverter
from ..policy import accel as accel_policy
from ..policy import enlightenments as enlightenment_rules
from ..policy import memory as memory_rules
from ..policy import processor as rules
from ..policy import tpm as tpm_rules
from ..state.lock import vm_lock
from . import memory
from .core import Core
from .types import NewVM, ProcessorResult, StopHow, StopResult, VMInfo, VMSpec

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class VMs:
    def __init__(self, core: Core) -> None:
        self.core = core

    # -- observation --------------------------------------------------------------------------
    def info(self, config: VMConfig, detail: bool = False) -> VMInfo:
        core = self.core
        state, pid = core.observe(config) if detail else core.quick_state(config)
        fields: dict[str, Any] = {
            "name": config.name,
            "state": state,
            "vcpus": config.vcpus,
            "memory": config.memory,
            "nested": config.nested,
            "config_version": config.config_version,
            "image": config.boot.image or config.boot.kernel,
            "pid": pid,
            "enlightenments": config.enlightenments,
            "tpm": config.tpm,
        }
        fields.update(memory.info_fields(core, config, pid is not None, detail))
        if pid is not None:
            core.ensure_daemon()  # reconcile: a daemon killed (or never started) comes back
            launch = core.launch(config)
            start = process.started_at(pid)
            fields["uptime"] = round(time.time() - start, 1) if start else None
            fields["accelerator"] = launch.get("accel")
            fields["cpu_model"] = launch.get("cpu_model")
            if detail:
                fields["hypervisor_running"], fields["hypervisor_detection"] = core.hypervisor_running(config)
        return VMInfo(**fields)

    def list_all(self) -> list[VMInfo]:
        configs = list(self.core.vms.all())
        for config in configs:
            self.reconcile_vm(config)
        return [self.info(config) for config in configs]

    def show(self, name: str) -> VMInfo:
        config = self.core.vms.get(validate_name(name))
        self.reconcile_vm(config)
        return self.info(config, detail=True)

    def reconcile_vm(self, config: VMConfig) -> None:
        """A QEMU that ended without nestor (the guest powered itself off, QEMU crashed, or nestor
        was killed): its runtime files, the balancer's state, its taps and its swtpm (one that
        outlived its QEMU) are cleaned up by the next command that looks at the VM. launch.json
        marks a VM nestor has not seen stop."""
        files = self.core.files(config)
        if not _leftovers(files) or process.live_pid(files.dir) is not None:
            return
        try:
            with vm_lock(files.lock, config.name, timeout=0):  # busy: a command is starting or stopping it
                if _leftovers(files) and process.live_pid(files.dir) is None:
                    self.stopped(config)
        except NestorError as exc:
            log.info("vm '%s': not reconciled now: %s", config.name, exc.message)

    # -- new ----------------------------------------------------------------------------------
    def new(self, spec: VMSpec) -> NewVM:
        core = self.core
        name = validate_name(spec.name)
        if spec.kernel and spec.image:
            raise InvalidInput("--image and --kernel exclude each other", hint="give one of them")
        if spec.initrd and not spec.kernel:
            raise InvalidInput("--initrd needs --kernel", hint="add --kernel FILE")
        config_version = validate_config_version(CURRENT_CONFIG_VERSION if spec.config_version is None
                                                 else spec.config_version)
        if spec.image is not None and spec.image not in bootplan.IMAGES:
            raise InvalidInput(f"unknown image {shown(spec.image)}", hint=f"images: {', '.join(bootplan.IMAGES)}")
        accel = accel_policy.choose(core.facts)
        warnings = rules.check_vcpus(spec.vcpus, spec.nested, accel)
        memory_rules.check_size(spec.memory, "VM", core.facts.mem_total, option="--memory")
        validate_text(spec.append, "--append", MAX_APPEND)  # it reaches the kernel command line
        if spec.nested:
            rules.check_nesting_version(name, config_version, accel)
        for switch in spec.switches:
            core.network.store.switch(switch)  # an unknown switch fails before the VM exists
        boot = BootSource(image=None if spec.kernel else (spec.image or "appliance"), kernel=spec.kernel,
                          initrd=spec.initrd, append=spec.append, run_script=spec.run_script)
        boot = bootplan.check(core.home.images, boot)
        # One transaction: the row (and its adapters) become visible only once the directory and its
        # files exist. A kill before COMMIT leaves no row (SQLite rolls back); the id is then reused
        # and the next `vm new` clears the orphaned directory.
        with Reverter() as revert:
            core.conn.execute("BEGIN IMMEDIATE")
            revert.add(lambda: core.conn.execute("ROLLBACK"))
            config = core.vms.add(VMConfig(name=name, vcpus=spec.vcpus, memory=spec.memory, nested=spec.nested,
                                           config_version=config_version, boot=boot))
            faults.point("vm-new:after-insert")
            vm_dir = core.vm_dir(config)
            self._sweep_orphans()
            if vm_dir.exists():
                shutil.rmtree(vm_dir)  # left by a `vm new` killed before its commit
            private_dir(core.home.vms)
            private_dir(vm_dir, parents=False)
            revert.add(lambda: shutil.rmtree(vm_dir, ignore_errors=True))
            faults.point("vm-new:after-mkdir")
            if boot.run_script:
                from ..images import initramfs

                initramfs.make_run_cpio(Path(boot.run_script), core.files(config).run_cpio)
            for switch in spec.switches:
                core.network.adapter_add(config.name, switch)  # rows only: taps are made at start
            faults.point("vm-new:before-commit")
            core.conn.execute("COMMIT")
            revert.success()
        return NewVM(self.info(config), warnings)

    def _sweep_orphans(self) -> None:
        """VM directories without a row (a `vm remove` killed after deleting the row) and without
        a live QEMU. Called inside `vm new`'s write transaction, so no other `vm new` is half-way."""
        if not self.core.home.vms.is_dir():
            return
        ids = {str(config.id) for config in self.core.vms.all()}
        for vm_dir in self.core.home.vms.iterdir():
            if vm_dir.name not in ids and vm_dir.is_dir() and process.live_pid(vm_dir) is None:
                shutil.rmtree(vm_dir, ignore_errors=True)

    # -- start --------------------------------------------------------------------------------
    def start(self, name: str) -> VMInfo:
        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        self.reconcile_vm(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            if process.live_pid(files.dir) is not None:
                raise StateError(f"vm '{name}' is already running", hint=f"nestor vm show {name}")
            self.start_locked(config)
        return self.info(config)

    def start_locked(self, config: VMConfig) -> None:
        """Start the stopped VM, the caller holding its lock (`start`; applying a checkpoint that
        restarts QEMU with the checkpoint's devices)."""
        core = self.core
        name = config.name
        files = core.files(config)
        with Reverter() as revert, contextlib.ExitStack() as closing:
            accel = accel_policy.choose(core.settled_facts())
            if config.nested and not accel.nesting_available:
                raise StateError(
                    f"vm '{name}' has nested virtualization on, but this host cannot offer it: "
                    f"{accel.nesting_reason}",
                    hint="nestor host check",
                )
            rules.check_vcpus(config.vcpus, config.nested, accel)
            enlightenment_rules.check_available(name, config.enlightenments, accel, "cannot start")
            user = core.qemu_user()  # QEMU drops root to it (a missing user fails here, nothing made)
            saved = memory.saved(files)  # a saved VM resumes: the same room, and -incoming
            write_private(files.launch, "{}")  # from here on, a kill leaves work for `reconcile`
            revert.add(lambda: files.launch.unlink(missing_ok=True))
            nics = core.network.attach(config)
            revert.add(lambda: core.network.detach(config))
            # The taps stay root's: QEMU gets their descriptors (net/tapfd.py), never their names.
            passed = []
            for nic in nics:
                if nic.tap:
                    fd = tapfd.open_tap(nic.tap, core.netns)
                    closing.callback(os.close, fd)
                    nic = replace(nic, fd=fd)
                passed.append(nic)
            nics = tuple(passed)
            tap_fds = tuple(nic.fd for nic in nics if nic.fd is not None)
            spec = replace(self._launch_spec(config, accel), user=user, nics=nics,
                           cpu_flags=enlightenment_rules.flags(config.enlightenments, accel, core.facts))
            if config.tpm:
                swtpm.start(files.dir, user)
                revert.add(lambda: swtpm.stop(files.dir))
                spec = replace(spec, tpm_socket=swtpm.socket_path(files.dir))
            faults.point("vm-start:after-attach")
            if saved is not None:
                spec = replace(spec, memory=saved.room, incoming=True)
            argv = qemu_argv.build(spec)
            if saved is not None:
                memory.check_pin(name, saved, argv)
            write_private(files.launch, json.dumps({"accel": accel.name, "cpu_model": spec.cpu_model, "argv": argv,
                                                    "netns": core.netns}))
            pid = process.spawn(argv, files.dir, core.netns, pass_fds=tap_fds, uid=user.uid if user else None)
            revert.add(lambda: _end(pid, files.dir))
            faults.point("vm-start:after-spawn")
            memory.after_spawn(core, config, spec.memory, saved)
            core.ensure_daemon()  # the serial log's cap (and the balancer) run there
            revert.success()

    def _launch_spec(self, config: VMConfig, accel: accel_policy.Accel) -> qemu_argv.LaunchSpec:
        core = self.core
        from . import diskvms

        guest = diskvms.find(core, config)
        if guest is not None:  # a disk-image VM: q35 with firmware (service/diskvms.py)
            return diskvms.launch_spec(core, config, accel, guest, memory.room(config))
        vm_dir = core.vm_dir(config)
        boot = bootplan.plan(core.home.images, config.boot, config.name, vm_dir, core.facts.level + 1)
        append = list(boot.append)
        if accel.name == "tcg" and core.facts.tsc_khz:
            # Without it ~1 boot in 3 hangs in TSC calibration on microvm when the host is busy.
            append.append(f"tsc_early_khz={core.facts.tsc_khz}")
        if config.boot.append:
            append.append(config.boot.append)
        return qemu_argv.LaunchSpec(
            name=config.name,
            vm_dir=vm_dir,
            accel=accel.name,
            cpu_model=accel.cpu_model(config.nested),
            vcpus=config.vcpus,
            memory=memory.room(config),
            kernel=boot.kernel,
            initrd=boot.initrd,
            append=" ".join(append),
            disks=boot.disks,
            agent=boot.agent,
        )

    # -- stop and remove ----------------------------------------------------------------------
    def stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        """Graceful: ACPI power button, hard stop after the timeout."""
        if not timeout > 0:
            raise InvalidInput(f"timeout must be positive, not {timeout}", hint="e.g. --timeout 30")
        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        self.reconcile_vm(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            pid = process.live_pid(files.dir)
            if pid is None:
                if turn_off and memory.discard_saved(files):
                    return StopResult(name, StopHow.DISCARDED, timeout)
                raise StateError(f"vm '{name}' is not running", hint=f"nestor vm show {name}")
            if not turn_off:
                try:
                    with Monitor(files.qmp_sock, name) as mon:
                        if mon.status() != "running":
                            mon.resume()  # a paused guest cannot hear the power button
                        mon.powerdown()
                    if process.wait_exit(pid, timeout):
                        faults.point("vm-stop:after-exit")
                        self.stopped(config)
                        return StopResult(name, StopHow.SHUT_DOWN, timeout)
                except EngineError:
                    pass
            process.terminate(pid)
            faults.point("vm-stop:after-exit")
            self.stopped(config)
            return StopResult(name, StopHow.TURNED_OFF if turn_off else StopHow.TIMED_OUT, timeout)

    def stopped(self, config: VMConfig) -> None:
        """QEMU is gone: its runtime files, the balancer's state and the taps go too."""
        files = self.core.files(config)
        process.clean_runtime_files(files.dir)
        swtpm.stop(files.dir)  # --terminate ends it with QEMU's connection; this catches the rest
        memory.on_stopped(files)
        self.core.network.detach(config)
        files.launch.unlink(missing_ok=True)  # last: while it is there, the next command reconciles

    def remove(self, name: str, force: bool = False) -> None:
        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            pid = process.live_pid(files.dir)
            if pid is not None:
                if not force:
                    raise StateError(f"vm '{name}' is running", hint=f"stop it first, or nestor vm remove {name} --force")
                process.terminate(pid)
                self.stopped(config)
            core.network.forget(config)
            faults.point("vm-remove:after-forget")
            core.vms.remove(config.id)
            faults.point("vm-remove:after-row")
            shutil.rmtree(files.dir, ignore_errors=True)

    def reset_disk(self, name: str) -> bool:
        """Discard an Off VM's own disk (the nested-host overlay): its next start begins afresh
        from the current image. Explicit only: nestor never deletes a disk on its own."""
        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            if process.live_pid(files.dir) is not None:
                raise StateError(f"vm '{name}' is running: its disk can only be reset while it is off",
                                 hint=f"nestor vm stop {name}")
            memory.refuse_if_saved(files, name, "its disk")
            if config.boot.image != "nested-host":
                raise InvalidInput(f"vm '{name}' has no disk of its own to reset (it boots {config.boot.image or 'a kernel'})",
                                   hint="only nested-host VMs have a disk")
            return bootplan.reset_disk(files.dir)

    # -- settings -----------------------------------------------------------------------------
    def set_processor(self, name: str, count: int | None = None, nested: bool | None = None,
                      enlightenments: str | None = None) -> ProcessorResult:
        if count is None and nested is None and enlightenments is None:
            raise InvalidInput("nothing to change", hint="give --count N, --expose-virtualization-extensions on|off "
                                                         "or --enlightenments hyperv|off")
        if enlightenments is not None:
            enlightenment_rules.validate_mode(enlightenments)
        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            config = core.vms.get(name)  # read again under the lock: no lost update
            state, _ = core.observe(config)
            memory.refuse_if_saved(files, name, "its processor")
            if nested is not None:
                rules.check_offline_change(name, state, "nested virtualization")
            if count is not None:
                rules.check_offline_change(name, state, "the vCPU count")
            if enlightenments is not None:
                rules.check_offline_change(name, state, "Hyper-V enlightenments")
            accel = accel_policy.choose(core.facts)
            new = replace(
                config,
                vcpus=config.vcpus if count is None else count,
                nested=config.nested if nested is None else nested,
                enlightenments=config.enlightenments if enlightenments is None else enlightenments,
            )
            if enlightenments is not None:
                enlightenment_rules.check_available(name, new.enlightenments, accel, "cannot turn them on")
            warnings = rules.check_vcpus(new.vcpus, new.nested, accel)
            if new.nested and not config.nested:
                rules.check_nesting_version(name, config.config_version, accel)
            core.vms.update(new)
            return ProcessorResult(self.info(new), warnings)

    def set_tpm(self, name: str, on: bool, delete_state: bool = False) -> VMInfo:
        """Enable-VMTPM / Disable-VMTPM, only while the VM is off. Turning it off keeps the TPM's
        state (its keys) in the VM's directory, so turning it on again gives the same TPM back;
        `delete_state` deletes it. Each checkpoint keeps the TPM it was taken with (in its vmstate,
        or its copy in tpm-checkpoints/) until the checkpoint is removed: applying it gives it back."""
        from . import diskvms

        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        self.reconcile_vm(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            config = core.vms.get(name)  # read again under the lock: no lost update
            state, _ = core.observe(config)
            if state is VMState.OFF and memory.is_saved(files):
                state = VMState.SAVED
            disk_image = diskvms.find(core, config) is not None
            tpm_rules.check_change(name, state, on, disk_image, delete_state)
            if on and not swtpm.state_dir(files.dir).is_dir():
                swtpm.make_state(files.dir, None)  # handed to the QEMU user at each start
            new = replace(config, tpm=on)
            core.vms.update(new)
            if delete_state:
                swtpm.stop(files.dir)  # none runs while the VM is off; an orphan would hold the state
                shutil.rmtree(swtpm.state_dir(files.dir), ignore_errors=True)
        return self.info(new)

    def upgrade(self, name: str) -> VMInfo:
        core = self.core
        config = core.vms.get(validate_name(name))
        files = core.files(config)
        with error_context(vm=name), vm_lock(files.lock, name):
            config = core.vms.get(name)
            state, _ = core.observe(config)
            rules.check_offline_change(name, state, "the configuration version")
            memory.refuse_if_saved(files, name, "its configuration version")
            new = replace(config, config_version=CURRENT_CONFIG_VERSION)
            core.vms.update(new)
        return self.info(new)

    def reconcile(self) -> list[str]:
        """After a crash or a reboot: every VM whose QEMU is gone loses its runtime files, its
        balancer state and its taps. Returns the names of the VMs cleaned up."""
        cleaned = []
        for config in self.core.vms.all():
            files = self.core.files(config)
            if process.live_pid(files.dir) is None and (_leftovers(files) or files.qmp_sock.exists()
                                                         or files.memory.exists()):
                with vm_lock(files.lock, config.name):
                    if process.live_pid(files.dir) is None:
                        self.stopped(config)
                        cleaned.append(config.name)
        return cleaned


def _leftovers(files: paths.VMFiles) -> bool:
    """Is there something of a run to clean up once QEMU is gone: launch.json (nestor has not seen
    it stop), or a live swtpm of this VM (an orphan: --terminate missed its QEMU's end)?"""
    return files.launch.exists() or swtpm.live_pid(files.dir) is not None


def _end(pid: int, vm_dir: Path) -> None:
    """Undo a spawn: end that QEMU (only if it is still ours) and remove its runtime files."""
    if process.live_pid(vm_dir) == pid:
        process.terminate(pid)
    process.clean_runtime_files(vm_dir)
