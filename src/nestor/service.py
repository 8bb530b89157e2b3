"""Use cases: the only place that changes the host and the state together.

Front ends (CLI now, REST later) call these methods and get model objects or NestorErrors.
"""

from __future__ import annotations

import functools
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bootplan, paths
from . import memory as memory_uc
from .engine import argv as qemu_argv
from .engine import process
from .engine.qmp import Monitor, hypervisor_bits
from .errors import EngineError, InvalidInput, StateError, error_context
from .host import facts as host_facts
from .model import (
    CURRENT_CONFIG_VERSION,
    BootSource,
    VMConfig,
    VMState,
    format_size,
    validate_config_version,
    validate_name,
)
from .policy import accel as accel_policy
from .policy import processor as rules
from .policy.checks import Check, host_checks
from .state import db
from .state.lock import vm_lock

if TYPE_CHECKING:
    from . import guests as guests_mod
    from .images import debian as debian_mod
    from .netservice import Network

Progress = Callable[[str], None]
LAUNCH_FILE = "launch.json"


@dataclass(frozen=True)
class VMInfo:
    """A VM as shown: its stored intent plus what was observed just now."""

    name: str
    state: str
    vcpus: int
    memory: str
    nested: bool
    config_version: str
    image: str | None
    pid: int | None = None
    uptime: float | None = None
    accelerator: str | None = None
    cpu_model: str | None = None
    hypervisor_running: bool | None = None
    hypervisor_detection: str | None = None
    # memory (nestor/memory.py): `memory` is the startup size
    dynamic_memory: bool = False
    memory_minimum: str | None = None
    memory_maximum: str | None = None
    memory_buffer: int | None = None
    memory_room: str | None = None  # QEMU's -m: what a running VM can grow to without a restart
    memory_assigned: str | None = None
    memory_demand: str | None = None
    memory_balancer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))  # flat: no dataclasses.asdict deep copy (vm list of 1,000 VMs)


class Nestor:
    def __init__(self, home: Path, netns: str | None = None) -> None:
        self.home = paths.Home(home)
        self.netns = netns
        self._conn = db.connect(self.home.db)
        self.vms = db.VMRepo(self._conn)
        self._facts: host_facts.HostFacts | None = None

    @functools.cached_property
    def network(self) -> Network:
        from .netservice import Network

        return Network(self.home, self.netns, self._conn, lambda config: self.observe(config)[0])

    # -- host -------------------------------------------------------------------------------
    @property
    def facts(self) -> host_facts.HostFacts:
        if self._facts is None:
            self._facts = host_facts.probe(qemu=False)
        return self._facts

    def host_check(self) -> tuple[host_facts.HostFacts, list[Check]]:
        facts = host_facts.probe()
        return facts, host_checks(facts)

    # -- observation ------------------------------------------------------------------------
    def _vm_dir(self, config: VMConfig) -> Path:
        return self.home.vm_dir(config.id)

    def observe(self, config: VMConfig) -> tuple[VMState, int | None]:
        """Reality, not the database: is QEMU alive, and is the guest running or paused."""
        vm_dir = self._vm_dir(config)
        pid = process.live_pid(vm_dir)
        if pid is None:
            return VMState.OFF, None
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, config.name, timeout=3.0) as mon:
                status = mon.status()
        except EngineError:
            return VMState.RUNNING, pid  # alive but busy: QMP admits one client at a time
        return (VMState.RUNNING if status == "running" else VMState.PAUSED), pid

    def _launch(self, config: VMConfig) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self._vm_dir(config) / LAUNCH_FILE).read_text())
            return data
        except (OSError, ValueError):
            return {}

    def info(self, config: VMConfig, detail: bool = False) -> VMInfo:
        state, pid = self.observe(config) if detail else self._quick_state(config)
        fields: dict[str, Any] = {
            "name": config.name,
            "state": state.value,
            "vcpus": config.vcpus,
            "memory": format_size(config.memory),
            "nested": config.nested,
            "config_version": config.config_version,
            "image": config.boot.image or config.boot.kernel,
            "pid": pid,
        }
        fields.update(memory_uc.info_fields(self, config, pid is not None, detail))
        if pid is not None:
            launch = self._launch(config)
            start = process.started_at(pid)
            fields["uptime"] = round(time.time() - start, 1) if start else None
            fields["accelerator"] = launch.get("accel")
            fields["cpu_model"] = launch.get("cpu_model")
            if detail:
                fields["hypervisor_running"], fields["hypervisor_detection"] = self.hypervisor_running(config)
        return VMInfo(**fields)

    def _quick_state(self, config: VMConfig) -> tuple[VMState, int | None]:
        """For lists: the process only, no QMP round-trip per VM."""
        pid = process.live_pid(self._vm_dir(config))
        return (VMState.OFF, None) if pid is None else (VMState.RUNNING, pid)

    def hypervisor_running(self, config: VMConfig) -> tuple[bool | None, str]:
        """Seed rule R7's trigger: does a hypervisor run inside this VM right now?

        KVM: QMP query-stats, vCPU guest_mode / nested_run. TCG: EFER.SVME or CR4.VMXE of any
        vCPU, read through QMP (L1's KVM sets SVME while it has a live VM).
        """
        vm_dir = self._vm_dir(config)
        if process.live_pid(vm_dir) is None:
            return None, "vm is off"
        launch = self._launch(config)
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, config.name, timeout=5.0) as mon:
                if launch.get("accel") == "kvm":
                    return _from_stats(mon.vcpu_stats())
                bits = hypervisor_bits(mon.registers())
        except EngineError as exc:
            return None, f"unknown: {exc.message}"
        return any(bits), f"EFER.SVME/CR4.VMXE of {sum(bits)} of {len(bits)} vCPUs set"

    # -- VMs ----------------------------------------------------------------------------------
    def vm_list(self) -> list[VMInfo]:
        return [self.info(config) for config in self.vms.all()]

    def vm_show(self, name: str) -> VMInfo:
        return self.info(self.vms.get(validate_name(name)), detail=True)

    def vm_new(
        self,
        name: str,
        vcpus: int = 1,
        memory: int = 512 << 20,
        nested: bool = False,
        boot: BootSource | None = None,
        config_version: str = CURRENT_CONFIG_VERSION,
    ) -> tuple[VMConfig, list[str]]:
        validate_name(name)
        validate_config_version(config_version)
        accel = accel_policy.choose(self.facts)
        warnings = rules.check_vcpus(vcpus, nested, accel)
        rules.check_memory(memory, self.facts.mem_total)
        if nested:
            rules.check_nesting_version(name, config_version, accel)
        boot = bootplan.check(self.home.images, boot or BootSource(image="appliance"))
        config = self.vms.add(
            VMConfig(name=name, vcpus=vcpus, memory=memory, nested=nested,
                     config_version=config_version, boot=boot)
        )
        vm_dir = self._vm_dir(config)
        try:
            if vm_dir.exists():
                shutil.rmtree(vm_dir)  # left by a crash between mkdir and the insert of a removed VM
            vm_dir.mkdir(parents=True)
            if boot.run_script:
                from .images import appliance

                appliance.make_run_cpio(Path(boot.run_script), vm_dir / paths.RUN_CPIO)
        except BaseException:
            self.vms.remove(config.id)
            shutil.rmtree(vm_dir, ignore_errors=True)
            raise
        return config, warnings

    def vm_start(self, name: str) -> VMInfo:
        config = self.vms.get(validate_name(name))
        vm_dir = self._vm_dir(config)
        with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
            if process.live_pid(vm_dir) is not None:
                raise StateError(f"vm '{name}' is already running", hint=f"nestor vm show {name}")
            accel = accel_policy.choose(self.facts)
            if config.nested and not accel.nesting_available:
                raise StateError(
                    f"vm '{name}' has nested virtualization on, but this host cannot offer it: "
                    f"{accel.nesting_reason}",
                    hint="nestor host check",
                )
            rules.check_vcpus(config.vcpus, config.nested, accel)
            saved = memory_uc.saved(vm_dir)  # a saved VM resumes: the same room, and -incoming
            spec = replace(self._launch_spec(config, accel), nics=self.network.attach(config))
            if saved is not None:
                spec = replace(spec, memory=saved.room, incoming=True)
            argv = qemu_argv.build(spec)
            (vm_dir / LAUNCH_FILE).write_text(
                json.dumps({"accel": accel.name, "cpu_model": spec.cpu_model, "argv": argv,
                            "netns": self.netns})
            )
            try:
                process.spawn(argv, vm_dir, self.netns)
                memory_uc.after_spawn(self, config, spec.memory, saved)
            except BaseException:
                self.network.detach(config)
                raise
        return self.info(config)

    def _launch_spec(self, config: VMConfig, accel: accel_policy.Accel) -> qemu_argv.LaunchSpec:
        from . import guests

        guest = guests.find(self, config)
        if guest is not None:  # a disk-image VM: q35 with firmware (nestor/guests.py)
            return guests.launch_spec(self, config, accel, guest, memory_uc.room(config))
        vm_dir = self._vm_dir(config)
        boot = bootplan.plan(self.home.images, config.boot, config.name, vm_dir, self.facts.level + 1)
        append = list(boot.append)
        if accel.name == "tcg" and self.facts.tsc_khz:
            # Without it ~1 boot in 3 hangs in TSC calibration on microvm when the host is busy.
            append.append(f"tsc_early_khz={self.facts.tsc_khz}")
        if config.boot.append:
            append.append(config.boot.append)
        return qemu_argv.LaunchSpec(
            name=config.name,
            vm_dir=vm_dir,
            accel=accel.name,
            cpu_model=accel.cpu_model(config.nested),
            vcpus=config.vcpus,
            memory=memory_uc.room(config),
            kernel=boot.kernel,
            initrd=boot.initrd,
            append=" ".join(append),
            disks=boot.disks,
            agent=boot.agent,
        )

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> str:
        """Graceful: ACPI power button, hard stop after the timeout. Returns how it stopped."""
        if timeout <= 0:
            raise InvalidInput(f"timeout must be positive, not {timeout}", hint="e.g. --timeout 30")
        config = self.vms.get(validate_name(name))
        vm_dir = self._vm_dir(config)
        with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
            pid = process.live_pid(vm_dir)
            if pid is None:
                if turn_off and memory_uc.discard_saved(vm_dir):
                    return "turned off: its saved state is discarded"
                raise StateError(f"vm '{name}' is not running")
            how = "turned off"
            if not turn_off:
                try:
                    with Monitor(vm_dir / paths.QMP_SOCK, name) as mon:
                        if mon.status() != "running":
                            mon.resume()  # a paused guest cannot hear the power button
                        mon.powerdown()
                    if process.wait_exit(pid, timeout):
                        self._stopped(config)
                        return "shut down"
                except EngineError:
                    pass
                how = f"turned off after {timeout:g} s without a guest shutdown"
            process.terminate(pid)
            self._stopped(config)
            return how

    def _stopped(self, config: VMConfig) -> None:
        process.clean_runtime_files(self._vm_dir(config))
        memory_uc.on_stopped(self._vm_dir(config))
        self.network.detach(config)

    def vm_remove(self, name: str, force: bool = False) -> None:
        config = self.vms.get(validate_name(name))
        vm_dir = self._vm_dir(config)
        with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
            pid = process.live_pid(vm_dir)
            if pid is not None:
                if not force:
                    raise StateError(f"vm '{name}' is running", hint=f"stop it first, or nestor vm remove {name} --force")
                process.terminate(pid)
                self._stopped(config)
            self.network.forget(config)
            self.vms.remove(config.id)
            shutil.rmtree(vm_dir, ignore_errors=True)

    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None) -> list[str]:
        config = self.vms.get(validate_name(name))
        vm_dir = self._vm_dir(config)
        with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
            state, _ = self.observe(config)
            memory_uc.refuse_if_saved(vm_dir, name, "its processor")
            if nested is not None:
                rules.check_offline_change(name, state, "nested virtualization")
            if count is not None:
                rules.check_offline_change(name, state, "the vCPU count")
            accel = accel_policy.choose(self.facts)
            new = replace(
                config,
                vcpus=config.vcpus if count is None else count,
                nested=config.nested if nested is None else nested,
            )
            warnings = rules.check_vcpus(new.vcpus, new.nested, accel)
            if new.nested and not config.nested:
                rules.check_nesting_version(name, config.config_version, accel)
            self.vms.update(new)
            return warnings

    def vm_upgrade(self, name: str) -> str:
        config = self.vms.get(validate_name(name))
        vm_dir = self._vm_dir(config)
        with error_context(vm=name), vm_lock(vm_dir / paths.LOCKFILE, name):
            state, _ = self.observe(config)
            rules.check_offline_change(name, state, "the configuration version")
            memory_uc.refuse_if_saved(vm_dir, name, "its configuration version")
            self.vms.update(replace(config, config_version=CURRENT_CONFIG_VERSION))
        return CURRENT_CONFIG_VERSION

    def vm_paths(self, name: str) -> paths.VMFiles:
        config = self.vms.get(validate_name(name))
        return paths.VMFiles(self._vm_dir(config))

    # -- images -------------------------------------------------------------------------------
    def image_build(self, image: str, progress: Progress, force: bool = False) -> Path:
        from .images import appliance

        images = self.home.images
        if image == "appliance":
            return appliance.build_appliance(images, progress, force=force).initrd.parent
        if image == "nested-host":
            from .images import nested_host

            appliance.build_appliance(images, progress, force=force)
            built = nested_host.build_nested_host(images, progress, force=force)
            root = bootplan.source_root()
            if root is not None:
                nested_host.build_payload(images, root, progress)
            return built.rootfs.parent
        raise InvalidInput(f"unknown image '{image}'", hint=f"images: {', '.join(bootplan.IMAGES)}")

    def image_list(self) -> list[dict[str, Any]]:
        return [
            {"name": image, "built": bootplan.image_built(self.home.images, image),
             "path": str(self.home.image_dir(image))}
            for image in bootplan.IMAGES
        ]

    # -- disk-image guests (nestor/guests.py, disks.py, checkpoints.py, images/store.py) ----------
    def vm_new_guest(self, name: str, vcpus: int, memory: int, nested: bool, config_version: str,
                     request: guests_mod.GuestRequest) -> tuple[VMConfig, list[str]]:
        from . import guests

        return guests.create(self, name, vcpus, memory, nested, config_version, request)

    def image_build_debian(self, request: debian_mod.DebianRequest, progress: Progress,
                           force: bool = False) -> Path:
        from . import guests
        from .images import debian

        name = debian.validate(request).image_name
        in_use = bool(guests.GuestRepo(self._conn).image_users(name))
        return debian.build_debian(self.home.images, request, progress, force=force, in_use=in_use).path

    def image_import(self, file: Path, name: str | None, progress: Progress) -> Path:
        from .images import store

        return store.import_image(self.home.images, file, name or _image_name(file), progress).path

    def image_store_list(self) -> list[dict[str, Any]]:
        from . import guests
        from .images import store

        repo = guests.GuestRepo(self._conn)
        rows = []
        for image in store.all_images(self.home.images):
            info = store.qemu_img_info(image.path, "qcow2")
            rows.append({"name": image.name, "built": True, "path": str(image.path), "source": image.source,
                         "format": info.get("format"), "virtual_size": store.human(int(info.get("virtual-size", 0))),
                         "virtual_bytes": int(info.get("virtual-size", 0)),
                         "allocated": store.human(int(info.get("actual-size", 0))),
                         "allocated_bytes": int(info.get("actual-size", 0)),
                         "used_by": ",".join(repo.image_users(image.name)) or None})
        return rows

    def image_remove(self, name: str) -> None:
        from . import guests
        from .images import store

        store.validate_image_name(name)
        store.remove(self.home.images, name, guests.GuestRepo(self._conn).image_users(name))

    def vm_disk_add(self, vm: str, name: str, size: int) -> dict[str, Any]:
        from . import disks

        return disks.add(self, vm, name, size)

    def vm_disk_list(self, vm: str) -> list[dict[str, Any]]:
        from . import disks

        return disks.listing(self, vm)

    def vm_disk_resize(self, vm: str, name: str, size: int) -> dict[str, Any]:
        from . import disks

        return disks.resize(self, vm, name, size)

    def vm_disk_remove(self, vm: str, name: str) -> None:
        from . import disks

        disks.remove(self, vm, name)

    def vm_checkpoint_new(self, vm: str, name: str) -> dict[str, Any]:
        from . import checkpoints

        return checkpoints.new(self, vm, name)

    def vm_checkpoint_list(self, vm: str) -> list[dict[str, Any]]:
        from . import checkpoints

        return checkpoints.listing(self, vm)

    def vm_checkpoint_apply(self, vm: str, name: str) -> dict[str, Any]:
        from . import checkpoints

        return checkpoints.apply(self, vm, name)

    def vm_checkpoint_remove(self, vm: str, name: str) -> None:
        from . import checkpoints

        checkpoints.remove(self, vm, name)

    def vm_ssh_argv(self, vm: str, command: list[str]) -> list[str]:
        from . import sshaccess

        return sshaccess.ssh_argv(sshaccess.target(self, vm), sshaccess.known_hosts(self), command)

    def adapter_set_address(self, vm: str, adapter: str | None, ip: str | None, gateway: str | None,
                            dns: str | None, clear: bool = False) -> dict[str, Any]:
        from . import guests

        return guests.set_address(self, vm, adapter, ip, gateway, dns, clear)


def _image_name(file: Path) -> str:
    """`image import FILE` without --name: the file name without its extensions, as a valid name."""
    import re

    stem = file.name.split(".")[0].lower()
    return re.sub(r"[^a-z0-9-]+", "-", stem).strip("-")[:32] or "imported"


def _from_stats(stats: list[dict[str, Any]]) -> tuple[bool | None, str]:
    for provider in stats:
        for entry in provider.get("stats", []):
            if entry.get("name") in ("guest_mode", "nested_run") and entry.get("value"):
                return True, f"query-stats {entry['name']} > 0"
    if not stats:
        return None, "query-stats returned nothing"
    return False, "query-stats guest_mode/nested_run are 0"
