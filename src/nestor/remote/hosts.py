"""Use cases for libvirt hosts and the VMs nestor runs on them: the libvirt driver.

`Hosts` answers the Hypervisor protocol's methods for VMs and hosts (nestor/hypervisor.py) with
its signatures and its typed results (service/types.py: VMInfo, StopResult, MemoryResult, …), so
the Service hands it a VM on a libvirt host as it hands a local one to its own engine, and
nothing above reads a sentence (tests/unit/test_driver_parity.py holds it to that). libvirt's
own words stay where the types have room for them: `VMInfo.host_state` (missing, crashed, …).

The seed's rules are nestor's, so they hold here as for local VMs, from the same policy modules:
R2 (the toggle and the vCPU count only while off: policy.processor), R6 (vCPU limits), R7 (no
memory change while a hypervisor runs inside: policy.memory), R12-R14 (no save, no live move
while one runs: policy.memory, policy.migration). Placement is policy.placement.
"""

from __future__ import annotations

import random
import sqlite3
import uuid as uuidlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from ..errors import Conflict, EngineError, InvalidInput, NestorError, NotFound, StateError, error_context
from ..model import VMState, format_size, validate_name
from ..policy import memory as memory_rules
from ..policy import migration as migration_rules
from ..policy import placement
from ..policy import processor as rules
from ..policy.accel import TCG_MAX_VCPUS, Accel
from ..service.types import (
    HostInfo,
    HostTree,
    MemoryChange,
    MemoryOutcome,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    Progress,
    SaveResult,
    StopResult,
    TreeNode,
    VMInfo,
    VMSpec,
    no_progress,
)
from . import domxml, migration
from . import uri as uri_mod
from .caps import HostCaps
from .libvirt_engine import MISSING, Detector, LibvirtHost, registers_detector
from .store import Host, HostRepo, RemoteVM, RemoteVMRepo

AUTO = "auto"
PROBE_WORKERS = 16  # hosts probed at once by `host list` and placement
MiB = 1 << 20
STORAGE_POOL = "default"  # where a move copies a disk the destination does not have (libvirt's usual pool)
STATES = {"running": VMState.RUNNING, "paused": VMState.PAUSED, "shutting-down": VMState.RUNNING}
PLAIN_STATES = ("running", "paused", "off")  # libvirt's words VMState says in full (others: host_state)


@dataclass(frozen=True)
class HostView:
    name: str
    uri: str
    reachable: bool
    error: str | None
    caps: HostCaps | None
    nestor_vms: int

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "uri": self.uri, "reachable": self.reachable,
                                "error": self.error, "nestor_vms": self.nestor_vms}
        if self.caps is not None:
            data.update(self.caps.to_json())
        return data

    def info(self, vm_names: list[str] | None = None) -> HostInfo:
        """The host in the protocol's type (`vm_names`: nestor's VMs there, for `host show`)."""
        data = self.to_json()
        data["cpu_modes"] = list(data.get("cpu_modes") or [])
        data["vm_names"] = vm_names or []
        known = HostInfo.__dataclass_fields__
        return HostInfo(**{k: v for k, v in data.items() if k in known})


def vm_info(vm: RemoteVM, host: str, state: str, *, saved: bool = False, hypervisor_running: bool | None = None,
            hypervisor_detection: str | None = None, memory_assigned: int | None = None,
            memory_demand: int | None = None) -> VMInfo:
    """nestor's record of a VM on a libvirt host and libvirt's `state` word, as a VMInfo."""
    return VMInfo(
        name=vm.name, state=STATES.get(state, VMState.SAVED if saved else VMState.OFF), vcpus=vm.vcpus,
        memory=vm.memory, nested=vm.nested, config_version="-", image=None,
        hypervisor_running=hypervisor_running, hypervisor_detection=hypervisor_detection,
        memory_maximum=vm.memory_maximum, memory_room=vm.memory_maximum, memory_assigned=memory_assigned,
        memory_demand=memory_demand, host=host, host_state=None if state in PLAIN_STATES else state,
    )


def accel_for(caps: HostCaps) -> Accel:
    """The host as the seed's processor rules see it (R6's limits, the vendor's flag)."""
    cpu = caps.cpu
    name = "kvm" if cpu.virt_type == "kvm" else "tcg"
    return Accel(name, f"libvirt {cpu.virt_type}", cpu.max_vcpus or TCG_MAX_VCPUS, cpu.nesting, cpu.nesting_reason,
                 cpu.nesting_flag or "svm")


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


class Hosts:
    def __init__(self, conn: sqlite3.Connection, detector: Detector = registers_detector) -> None:
        self.hosts = HostRepo(conn)
        self.vms = RemoteVMRepo(conn)
        self.detector = detector
        self._engines: dict[str, LibvirtHost] = {}

    def engine(self, host: Host) -> LibvirtHost:
        if host.uri not in self._engines:
            engine = LibvirtHost(host.name, host.uri, self.detector)
            self._engines[host.uri] = engine
            if host.uri.startswith("test:"):
                self._reconcile(engine, host)
        engine = self._engines[host.uri]
        engine.name = host.name
        return engine

    # -- hosts -------------------------------------------------------------------------------------
    def _probe(self, host: Host) -> tuple[HostCaps | None, str | None]:
        """Capabilities read from libvirt now (threads: no SQLite in here)."""
        try:
            return self.engine(host).caps(), None
        except NestorError as exc:
            return None, exc.message

    def view(self, host: Host) -> HostView:
        caps, error = self._probe(host)
        return HostView(host.name, host.uri, caps is not None, error, caps, self.vms.count_on(host.id))

    def host_add(self, name: str, uri: str) -> HostInfo:
        validate_name(name, "host")
        uri_mod.validate(uri)
        existing = self.hosts.find(name)
        if existing is not None:
            raise Conflict(f"host '{name}' already exists ({existing.uri})", hint="choose another name")
        caps = LibvirtHost(name, uri, self.detector).caps()  # unreachable: an error, nothing stored
        host = self.hosts.add(Host(name, uri))
        return HostView(host.name, host.uri, True, None, caps, 0).info()

    def host_list(self) -> list[HostInfo]:
        return [view.info() for view in self.views()]

    def views(self) -> list[HostView]:
        """Every host with its capabilities read now (in parallel)."""
        hosts = self.hosts.all()
        counts = self.vms.counts()
        for host in hosts:  # connections (and a test host's reconcile) here; probes in parallel below
            try:
                self.engine(host)
            except NestorError:
                pass
        if len(hosts) > 1:
            with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(hosts))) as pool:
                probes = list(pool.map(self._probe, hosts))
        else:
            probes = [self._probe(h) for h in hosts]
        return [HostView(h.name, h.uri, caps is not None, error, caps, counts.get(h.id, 0))
                for h, (caps, error) in zip(hosts, probes, strict=True)]

    def host_show(self, name: str) -> HostInfo:
        host = self.hosts.get(validate_name(name, "host"))
        return self.view(host).info([vm.name for vm in self.vms.on_host(host.id)])

    def host_remove(self, name: str) -> None:
        host = self.hosts.get(validate_name(name, "host"))
        vms = self.vms.on_host(host.id)
        if vms:
            shown = ", ".join(vm.name for vm in vms[:5]) + (" …" if len(vms) > 5 else "")
            raise StateError(f"host '{name}' has {len(vms)} VM(s) of nestor's ({shown})",
                             hint="move them (nestor vm move NAME --host OTHER) or remove them first")
        self.hosts.remove(host.id)
        self._engines.pop(host.uri, None)

    def candidates(self) -> list[placement.Candidate]:
        result = []
        for view in self.views():
            if view.caps is None:
                result.append(placement.Candidate(view.name, False, 0, False, error=view.error or ""))
            else:
                cpu = view.caps.cpu
                result.append(placement.Candidate(view.name, True, view.caps.free_memory, cpu.nesting,
                                                  cpu.nesting_reason))
        return result

    # -- VMs on hosts ----------------------------------------------------------------------------
    def find_vm(self, name: str) -> RemoteVM | None:
        return self.vms.find(name)

    def get_vm(self, name: str) -> tuple[RemoteVM, Host]:
        vm = self.vms.find(validate_name(name))
        if vm is None:
            raise NotFound(f"vm '{name}' not found", hint="nestor vm list shows the VMs")
        return vm, self.hosts.by_id(vm.host_id)

    def spec(self, vm: RemoteVM, caps: HostCaps) -> domxml.DomainSpec:
        virt = caps.domain_type
        nics: tuple[domxml.Nic, ...] = ()
        if vm.network:
            nics = (domxml.Nic(vm.mac or random_mac(), network=vm.network, mac_guard=not vm.mac_spoofing),)
        return domxml.DomainSpec(
            name=vm.name, uuid=vm.uuid, virt_type=virt, vcpus=vm.vcpus, memory=vm.memory_maximum,
            current_memory=vm.memory, cpu=domxml.cpu_plan(caps.cpu, vm.nested), nested=vm.nested,
            arch=None if virt == "test" else "x86_64", machine=None if virt == "test" else "q35",
            disk=vm.disk, kernel=vm.kernel, initrd=vm.initrd, append=vm.append, nics=nics,
            api_channel=vm.nested and virt != "test",
        )

    def vm_new(self, spec: VMSpec) -> NewVM:
        if spec.image or spec.run_script or spec.config_version or spec.switches:
            raise InvalidInput("a VM on a libvirt host takes no --image/--run/--config-version/--switch",
                               hint="on a libvirt host use --disk, --kernel/--initrd/--append (its files) and --network")
        if spec.host is None:
            raise InvalidInput(f"vm '{spec.name}': no libvirt host given", hint="add --host NAME (or --host auto)")
        validate_name(spec.name)
        host = spec.host
        if spec.network:
            from .nats import RemoteNats  # nats.py builds on this module

            nats = RemoteNats(self)
            nat = nats.repo.find(spec.network)
            if nat is not None and host == AUTO:  # a nestor NAT lives on one host: the VM goes there
                host = self.hosts.by_id(nat.host_id).name
            nats.check_network(spec.network, host)
        vm, chosen, warnings = self._new(
            spec.name, host, vcpus=spec.vcpus, memory=spec.memory, nested=spec.nested, maximum=spec.maximum,
            disk=spec.disk, network=spec.network, kernel=spec.kernel, initrd=spec.initrd, append=spec.append or None)
        where = f"placed on host '{chosen.host}': {chosen.reason}" if chosen else None
        return NewVM(self.vm_show(vm.name), warnings, where)

    def _new(self, name: str, host: str, vcpus: int, memory: int, nested: bool, maximum: int | None,
             disk: str | None, network: str | None, kernel: str | None, initrd: str | None, append: str | None,
             ) -> tuple[RemoteVM, placement.Placement | None, list[str]]:
        validate_name(name)
        if (initrd or append) and not kernel:
            raise InvalidInput("--initrd and --append need --kernel", hint="add --kernel FILE (a path on that host)")
        maximum = maximum or memory
        if maximum < memory:
            raise InvalidInput(f"startup memory {format_size(memory)} is more than maximum memory "
                               f"{format_size(maximum)}", hint="minimum <= startup <= maximum")
        memory_rules.check_size(memory, "startup", 0)
        memory_rules.check_size(maximum, "maximum", 0)
        chosen: placement.Placement | None = None
        if host == AUTO:
            chosen = placement.place(self.candidates(), maximum, nested)
            host = chosen.host
        target = self.hosts.get(validate_name(host, "host"))
        caps = self.engine(target).caps()
        if nested and not caps.cpu.nesting:
            raise StateError(f"host '{target.name}' cannot offer nested virtualization: {caps.cpu.nesting_reason}",
                             hint="nestor host list shows which hosts can, or use --host auto")
        warnings = rules.check_vcpus(vcpus, nested, accel_for(caps))
        if maximum > caps.memory_total:
            raise InvalidInput(f"memory {format_size(maximum)} is more than host '{target.name}' has "
                               f"({caps.memory_total >> 20}M)", hint="give the VM less memory, or use --host auto")
        vm = RemoteVM(name=name, host_id=target.id, uuid=str(uuidlib.uuid4()), vcpus=vcpus, memory=memory,
                      memory_maximum=maximum, nested=nested, disk=disk, kernel=kernel, initrd=initrd,
                      append=append, network=network,
                      mac=random_mac() if network else None)
        spec = self.spec(vm, caps)  # before the insert: a bad spec changes nothing
        vm = self.vms.add(vm)
        try:
            self.engine(target).define(spec)
        except BaseException:
            self.vms.remove(vm.id)
            raise
        return vm, chosen, warnings

    def _reconcile(self, engine: LibvirtHost, host: Host) -> None:
        """A test driver's state lives in its connection: define nestor's VMs it does not have.

        (A real host keeps its domains; one that lost a VM shows it as missing until `vm start`.)"""
        vms = self.vms.on_host(host.id)
        if not vms:
            return
        present = engine.states()
        caps = None
        for vm in vms:
            if vm.uuid not in present:
                caps = caps or engine.caps()
                engine.define(self.spec(vm, caps))

    def _ensure_defined(self, vm: RemoteVM, host: Host) -> LibvirtHost:
        engine = self.engine(host)
        if engine.state(vm.uuid) == MISSING:  # the host lost it (a test driver in a new process)
            engine.define(self.spec(vm, engine.caps()))
        return engine

    def info(self, vm: RemoteVM, host: Host | None = None, detail: bool = False,
             states: dict[str, str] | None = None) -> VMInfo:
        """`states`: the host's domain states read once for a whole list (a missing UUID: missing)."""
        host = host or self.hosts.by_id(vm.host_id)
        try:
            engine = self.engine(host)
            state = states.get(vm.uuid, MISSING) if states is not None else engine.state(vm.uuid)
        except NestorError as exc:
            return vm_info(vm, host.name, f"unknown ({exc.message})")
        fields: dict[str, Any] = {}
        if detail and state == "off":
            fields["saved"] = engine.has_saved_state(vm.uuid)
        if detail and state in ("running", "paused"):
            reading = engine.memory(vm.uuid, vm.name)
            fields["memory_assigned"] = reading.actual
            fields["memory_demand"] = reading.demand
            if vm.nested:
                fields["hypervisor_running"], fields["hypervisor_detection"] = engine.hypervisor_running(vm.uuid, vm.name)
            else:
                fields["hypervisor_running"], fields["hypervisor_detection"] = False, "nesting is off"
        return vm_info(vm, host.name, state, **fields)

    def _host_states(self, host: Host) -> dict[str, str] | str:
        """A host's domain states in one call, or why they cannot be read."""
        try:
            return self.engine(host).states()
        except NestorError as exc:
            return exc.message

    def vm_list(self) -> list[VMInfo]:
        """Every VM on every host: one libvirt call per host, not per VM."""
        hosts = {h.id: h for h in self.hosts.all()}
        states = {host_id: self._host_states(host) for host_id, host in hosts.items()}
        result = []
        for vm in self.vms.all():
            known = states[vm.host_id]
            if isinstance(known, str):
                result.append(vm_info(vm, hosts[vm.host_id].name, f"unknown ({known})"))
            else:
                result.append(self.info(vm, hosts[vm.host_id], states=known))
        return result

    def vm_show(self, name: str) -> VMInfo:
        vm, host = self.get_vm(name)
        return self.info(vm, host, detail=True)

    def vm_start(self, name: str) -> VMInfo:
        vm, host = self.get_vm(name)
        with error_context(vm=name, host=host.name):
            engine = self._ensure_defined(vm, host)
            if engine.state(vm.uuid) in ("running", "paused"):
                raise StateError(f"vm '{name}' is already running", hint=f"nestor vm show {name}")
            caps = engine.caps()
            if vm.nested and not caps.cpu.nesting:
                raise StateError(f"vm '{name}' has nested virtualization on, but host '{host.name}' cannot offer it: "
                                 f"{caps.cpu.nesting_reason}", hint=f"nestor vm move {name} --host OTHER")
            engine.start(vm.uuid, name)
        return self.info(vm, host)

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        if timeout <= 0:
            raise InvalidInput(f"timeout must be positive, not {timeout}", hint="e.g. --timeout 30")
        vm, host = self.get_vm(name)
        with error_context(vm=name, host=host.name):
            engine = self.engine(host)
            if engine.state(vm.uuid) not in ("running", "paused", "shutting-down"):
                raise StateError(f"vm '{name}' is not running")
            return StopResult(name, engine.stop(vm.uuid, name, turn_off, timeout), timeout)

    def vm_remove(self, name: str, force: bool = False) -> None:
        vm, host = self.get_vm(name)
        with error_context(vm=name, host=host.name):
            engine = self.engine(host)
            if engine.state(vm.uuid) in ("running", "paused") and not force:
                raise StateError(f"vm '{name}' is running", hint=f"stop it first, or nestor vm remove {name} --force")
            engine.undefine(vm.uuid, name)
            self.vms.remove(vm.id)

    def _observed(self, engine: LibvirtHost, vm: RemoteVM) -> VMState:
        state = engine.state(vm.uuid)
        return {"running": VMState.RUNNING, "paused": VMState.PAUSED}.get(state, VMState.OFF)

    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None,
                         enlightenments: str | None = None) -> ProcessorResult:
        if enlightenments is not None:
            raise InvalidInput(f"vm '{name}' is on a libvirt host: nestor sets no enlightenments there",
                               hint="give them in the domain's <hyperv> block with virsh edit")
        vm, host = self.get_vm(name)
        with error_context(vm=name, host=host.name):
            engine = self._ensure_defined(vm, host)
            state = self._observed(engine, vm)
            if nested is not None:
                rules.check_offline_change(name, state, "nested virtualization")  # R2
            if count is not None:
                rules.check_offline_change(name, state, "the vCPU count")
            new = replace(vm, vcpus=vm.vcpus if count is None else count, nested=vm.nested if nested is None else nested)
            caps = engine.caps()
            warnings = rules.check_vcpus(new.vcpus, new.nested, accel_for(caps))
            if new.nested and not caps.cpu.nesting:
                raise StateError(f"host '{host.name}' cannot offer nested virtualization: {caps.cpu.nesting_reason}",
                                 hint=f"nestor vm move {name} --host OTHER first")
            engine.define(self.spec(new, caps))
            self.vms.update(new)
        return ProcessorResult(self.vm_show(name), warnings)

    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult:
        """R7 through libvirt: a running VM's balloon moves only while no hypervisor runs inside.
        Only the startup size is nestor's to set there (no dynamic memory on a libvirt host)."""
        startup = change.startup
        others = (change.dynamic, change.minimum, change.maximum, change.buffer)
        if startup is None or any(v is not None for v in others):
            raise InvalidInput(f"vm '{name}' is on a libvirt host: only --startup can be set there",
                               hint=f"nestor vm set-memory {name} --startup SIZE")
        vm, host = self.get_vm(name)
        with error_context(vm=name, host=host.name):
            memory_rules.check_size(startup, "startup", 0)
            engine = self._ensure_defined(vm, host)
            running = self._observed(engine, vm) is not VMState.OFF
            if running:
                if vm.nested:
                    busy, how = engine.hypervisor_running(vm.uuid, name)
                    memory_rules.check_no_hypervisor(name, busy, how)
                if startup > vm.memory_maximum:
                    raise StateError(
                        f"vm '{name}' was started with room for {format_size(vm.memory_maximum)} of memory; "
                        f"{format_size(startup)} needs more, which the VM can only get while it is off",
                        hint=f"nestor vm stop {name}, then set the memory")
                engine.set_memory(vm.uuid, name, startup)  # live, through the balloon
                self.vms.update(replace(vm, memory=startup))
                return MemoryResult(name, MemoryOutcome.RESIZED, startup)
            new = replace(vm, memory=startup, memory_maximum=max(vm.memory_maximum, startup))
            engine.define(self.spec(new, engine.caps()))
            self.vms.update(new)
            return MemoryResult(name, MemoryOutcome.UPDATED, startup)

    def vm_save(self, name: str) -> SaveResult:
        """libvirt's managed save: the state stays on the host (libvirt names no file for it), so
        the result's `path` says where and its `size` is 0."""
        vm, host = self.get_vm(name)
        with error_context(vm=name, host=host.name):
            engine = self.engine(host)
            if self._observed(engine, vm) is VMState.OFF:
                raise StateError(f"vm '{name}' is not running")
            if vm.nested:
                busy, how = engine.hypervisor_running(vm.uuid, name)
                memory_rules.check_save(name, busy, how)  # R12-R14
            engine.save(vm.uuid, name)
        return SaveResult(name, f"libvirt managed save on host '{host.name}'", 0)

    def vm_move(self, name: str, host: str, progress: Progress = no_progress) -> MoveResult:
        dest_name = host
        vm, source = self.get_vm(name)
        dest = self.hosts.get(validate_name(dest_name, "host"))
        with error_context(vm=name, host=source.name):
            engine = self._ensure_defined(vm, source)
            running = self._observed(engine, vm) is not VMState.OFF
            busy: bool | None = False
            how = "nesting is off"
            if running and vm.nested and source.id != dest.id:
                busy, how = engine.hypervisor_running(vm.uuid, name)
            migration_rules.check_move(name, source.name, dest.name, busy, how, running)
            target = self.engine(dest)
            caps = target.caps()
            if vm.nested and not caps.cpu.nesting:
                raise StateError(f"host '{dest.name}' cannot offer nested virtualization: {caps.cpu.nesting_reason}",
                                 hint="nestor host list shows which hosts can")
            if running and vm.nested:
                migration_rules.check_same_extension(name, dest.name, engine.caps().cpu.nesting_flag,
                                                     caps.cpu.nesting_flag)
            if vm.network and not target.has_network(vm.network):
                raise StateError(f"host '{dest.name}' has no network '{vm.network}', which vm '{name}' is attached to",
                                 hint=f"make one there first (a libvirt network named '{vm.network}')")
            copy = self._storage_copy(vm, engine, target, running) if vm.disk else None
            plan = migration.plan(name, running, copy, source.uri, dest.uri)
            progress(f"moving vm '{name}' from '{source.name}' to '{dest.name}' "
                     f"({', '.join(migration.flag_names(plan.flags))})")
            note = migration.transport_note(plan)
            if note is not None:
                progress(note)
            if copy is not None:
                progress(f"copying disk {copy.source_path} to {copy.dest_path} on host '{dest.name}'")
            if running:
                try:
                    engine.migrate(vm.uuid, name, target, plan, progress)
                except BaseException:
                    if copy is not None:
                        target.delete_volume(copy.dest_path)
                    raise
                if copy is not None:
                    vm = self.vms.set_disk(vm, copy.dest_path)
            else:
                # An off VM: define it on the destination from nestor's record, then drop the source's.
                target.define(self.spec(vm, caps))
                try:
                    engine.undefine(vm.uuid, name)
                except EngineError:
                    target.undefine(vm.uuid, name)
                    raise
            self.vms.move(vm, dest.id)
            return MoveResult(name, source.name, dest.name, live=running,
                              disk_copied_to=copy.dest_path if copy is not None else None)

    def _storage_copy(self, vm: RemoteVM, engine: LibvirtHost, target: LibvirtHost,
                      running: bool) -> migration.StorageCopy | None:
        """None when the destination has the disk (a pool there holds the same path: shared storage);
        otherwise a volume made in the destination's pool STORAGE_POOL for libvirt to copy into."""
        assert vm.disk is not None
        if target.has_volume(vm.disk):
            return None
        if not running:
            raise StateError(f"host '{target.name}' does not have vm '{vm.name}''s disk {vm.disk}, and libvirt "
                             "copies a disk only while the VM runs",
                             hint=f"nestor vm start {vm.name}, then move it (the disk is copied live)")
        capacity = engine.disk_capacity(vm.uuid, vm.name, vm.disk)
        volume = vm.disk.rsplit("/", 1)[-1]
        dest_path = target.create_volume(STORAGE_POOL, volume, capacity, domxml.disk_format(vm.disk))
        try:
            xml, dev = domxml.with_disk_at(engine.migratable_xml(vm.uuid, vm.name), vm.disk, dest_path)
        except BaseException:
            target.delete_volume(dest_path)
            raise
        return migration.StorageCopy(dev, vm.disk, dest_path, xml)

    # -- the nestor inside a VM -------------------------------------------------------------------
    def api_transport(self, name: str, timeout: float) -> Any:
        """An httpx transport to the nestor API inside a VM with nesting on, through libvirt."""
        vm, host = self.get_vm(name)
        if not vm.nested:
            raise StateError(f"vm '{name}' has nested virtualization off: it has no nestor API channel",
                             hint=f"nestor vm set-processor {name} --expose-virtualization-extensions on (while off)")
        if host.uri.startswith("test:"):
            raise StateError(f"vm '{name}' is on libvirt's test driver, which runs no guest")
        engine = self.engine(host)
        from .apichannel import StreamTransport

        return StreamTransport(engine.conn, engine.domain(vm.uuid, name), name, timeout, engine)

    # -- tree ------------------------------------------------------------------------------------
    def host_trees(self, descend: Callable[[TreeNode], None] = lambda node: None) -> list[HostTree]:
        """Every libvirt host and nestor's VMs on it (level 1), for `nestor tree`. `descend(node)`
        is called for each running VM with nesting on whose nestor can be asked (not on the test
        driver, which runs no guest) to fill in the levels inside."""
        result = []
        for view in self.views():
            host = self.hosts.get(view.name)
            node = HostTree(view.name, view.uri, 0, view.reachable, view.error)
            known = self._host_states(host) if view.reachable else {}
            if isinstance(known, dict):
                for vm in self.vms.on_host(host.id):
                    state = known.get(vm.uuid, MISSING)  # libvirt's word, as `tree` has always shown it
                    entry = TreeNode(vm.name, 1, state, vm.vcpus, format_size(vm.memory), vm.nested)
                    if state == "running" and vm.nested and not host.uri.startswith("test:"):
                        descend(entry)
                    node.vms.append(entry)
            result.append(node)
        return result
