"""The one entry point of every front end (CLI, API, `nestor ps`, the web UI).

Every use case is a method with typed input and typed output (service/types.py) or a
NestorError. Front ends hold no rule and no rollback of their own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .. import bootplan
from ..errors import Conflict, InvalidInput, NestorError, StateError
from ..model import validate_name
from ..policy import nesting as nesting_rule
from ..policy.checks import host_checks
from . import guests, memory
from .audit import audited
from .core import Core
from .guest_types import (
    AddressResult,
    CheckpointInfo,
    CheckpointResult,
    DiskInfo,
    DiskResize,
    GuestSpec,
    StoredImageInfo,
    VMAddress,
)
from .net_types import (
    AdapterInfo,
    AdapterSpec,
    GuardChange,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
)
from .remote import Remote
from .types import (
    AuditEntry,
    CheckResult,
    ExecResult,
    HostInfo,
    HostPolicy,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    Progress,
    SaveResult,
    StopResult,
    Tree,
    VMInfo,
    VMSpec,
    no_progress,
)
from .vms import VMs

if TYPE_CHECKING:
    from ..client import Client
    from ..images.debian import DebianRequest
    from ..lab.session import Labs
    from ..lab.types import (
        LabDown,
        LabInfo,
        LabInventory,
        LabPlan,
        LabRestored,
        LabSaved,
        LabStatus,
        LabUp,
        LevelReport,
    )

LOG_CHUNK = 65536
LOG_POLL = 0.1


def _vm_and(arg: str) -> Callable[[dict[str, Any]], str]:
    """An audit target of a VM's part: `VM/PART` (an adapter, a disk, a checkpoint)."""
    return lambda a: f"{a['vm']}/{a[arg]}" if a.get(arg) else str(a["vm"])


class Service:
    def __init__(self, home: Path, netns: str | None = None, create: bool = True) -> None:
        """`create=False` (read-only and changing commands): a missing home is refused, not made."""
        self.core = Core(home, netns, create)
        self._vms = VMs(self.core)
        self.remote = Remote(self.core)  # VMs on libvirt hosts (service/remote.py)
        self._auditing = False  # inside an audited call (service/audit.py): nested calls record nothing

    @property
    def home(self) -> Path:
        return self.core.home.root

    # -- the handle (nestor.hypervisor.Hypervisor) ------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.core.conn.close()

    def guest(self, name: str) -> Client:
        """The nestor inside running VM `name` (a nested-host guest): a Client over its channel,
        which holds the channel until closed."""
        from . import channel

        self._local_only(name, "the nestor API channel")
        return channel.open_client(self.core, validate_name(name), channel.GUEST_TIMEOUT)

    # -- host ---------------------------------------------------------------------------------
    @staticmethod
    def host_check() -> HostReport:
        """The host's prerequisites; needs no home (so `host check` never makes one)."""
        from ..host import facts as host_facts

        facts = host_facts.probe()
        checks = [CheckResult(c.name, c.ok, c.detail, c.fix) for c in host_checks(facts)]
        checks.extend(_qemu_user_check(facts.qemu_user_option))
        ok = all(c.ok for c in checks if c.name in ("qemu", "accelerator", "qemu user"))
        return HostReport(facts.to_json(), checks, ok)

    # -- VMs ----------------------------------------------------------------------------------
    def vm_list(self) -> list[VMInfo]:
        local = self._vms.list_all()
        if not self.remote.has_vms():
            return local
        return sorted(local + self.remote.driver.vm_list(), key=lambda info: info.name)

    def vm_show(self, name: str) -> VMInfo:
        if self.remote.owns(name):
            return self.remote.driver.vm_show(name)
        return self._vms.show(name)

    @audited("vm.new", lambda a: a["spec"].name)
    def vm_new(self, spec: VMSpec) -> NewVM:
        if spec.nested:
            self._check_nesting(spec.name, nesting_rule.Action.NEW)
        if spec.host is not None:
            return self.remote.driver.vm_new(spec)
        if spec.maximum is not None or spec.disk or spec.network:
            raise InvalidInput("--maximum, --disk and --network are for a VM on a libvirt host",
                               hint="add --host NAME (or --host auto)")
        return self._vms.new(spec)

    @audited("vm.start")
    def vm_start(self, name: str) -> VMInfo:
        if self._nesting() is nesting_rule.Nesting.BLOCK:
            remote = self.remote.owns(name)
            nested = self.remote.driver.vm_show(name).nested if remote else self.core.vms.get(validate_name(name)).nested
            if nested:
                self._check_nesting(name, nesting_rule.Action.START)
        if self.remote.owns(name):
            return self.remote.driver.vm_start(name)
        return self._vms.start(name)

    @audited("vm.stop")
    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        guests.check_timeout(timeout)
        if self.remote.owns(name):
            return self.remote.driver.vm_stop(name, turn_off, timeout)
        return self._vms.stop(name, turn_off=turn_off, timeout=timeout)

    @audited("vm.remove")
    def vm_remove(self, name: str, force: bool = False) -> None:
        if self.remote.owns(name):
            return self.remote.driver.vm_remove(name, force)
        self._vms.remove(name, force=force)

    @audited("vm.set-processor")
    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None,
                         enlightenments: str | None = None) -> ProcessorResult:
        if nested:
            self._check_nesting(name, nesting_rule.Action.ENABLE)
        if self.remote.owns(name):
            return self.remote.driver.vm_set_processor(name, count, nested, enlightenments)
        return self._vms.set_processor(name, count=count, nested=nested, enlightenments=enlightenments)

    @audited("vm.set-tpm")
    def vm_set_tpm(self, name: str, on: bool, delete_state: bool = False) -> VMInfo:
        self._local_only(name, "virtual TPMs")
        return self._vms.set_tpm(name, on, delete_state=delete_state)

    @audited("vm.set-memory")
    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult:
        if self.remote.owns(name):
            return self.remote.driver.vm_set_memory(name, change)
        return memory.set_memory(self.core, name, change)

    @audited("vm.save")
    def vm_save(self, name: str) -> SaveResult:
        if self.remote.owns(name):
            return self.remote.driver.vm_save(name)
        return memory.save(self.core, name, self._vms.stopped)

    @audited("vm.reset-disk")
    def vm_reset_disk(self, name: str) -> bool:
        """Discard an Off VM's disk; True if it had one (the next start makes a fresh one)."""
        return self._vms.reset_disk(name)

    @audited("vm.upgrade")
    def vm_upgrade(self, name: str) -> VMInfo:
        self._local_only(name, "configuration versions")
        return self._vms.upgrade(name)

    @audited("vm.move")
    def vm_move(self, name: str, host: str, progress: Progress = no_progress) -> MoveResult:
        """Live migration to another libvirt host (issue 12); refused while a hypervisor runs inside."""
        if not self.remote.owns(name):
            self._vms.show(validate_name(name))  # an unknown name: NotFound
            raise InvalidInput(f"vm '{name}' runs on this machine: only VMs on libvirt hosts can move",
                               hint="nestor vm new NAME --host H makes a VM on a libvirt host")
        return self.remote.driver.vm_move(name, host, progress)

    def _local_only(self, name: str, what: str) -> None:
        if self.remote.owns(name):
            raise InvalidInput(f"vm '{name}' is on a libvirt host: {what} are for VMs on this machine",
                               hint=f"nestor vm show {name}")

    # -- libvirt hosts (issue 12) -----------------------------------------------------------------
    @audited("host.add")
    def host_add(self, name: str, uri: str) -> HostInfo:
        return self.remote.driver.host_add(name, uri)

    def host_list(self) -> list[HostInfo]:
        return self.remote.driver.host_list()

    def host_show(self, name: str) -> HostInfo:
        return self.remote.driver.host_show(name)

    @audited("host.remove")
    def host_remove(self, name: str) -> None:
        self.remote.driver.host_remove(name)

    # -- host policy (policy/nesting.py) and the audit log (service/audit.py) ----------------------
    def _nesting(self) -> nesting_rule.Nesting:
        from ..state.hostpolicy import NESTING, PolicyRepo

        value, _ = PolicyRepo(self.core.conn).get(NESTING, nesting_rule.Nesting.ALLOW.value)
        return nesting_rule.Nesting(value) if value in nesting_rule.Nesting.__members__.values() \
            else nesting_rule.Nesting.BLOCK  # an unknown stored value: the safe side

    def _check_nesting(self, name: str, action: nesting_rule.Action) -> None:
        nesting_rule.check(self._nesting(), name, action)

    def host_policy(self) -> HostPolicy:
        """The host's policy, with the VMs it concerns (nesting on; running ones are not stopped by a block)."""
        from ..state.hostpolicy import NESTING, PolicyRepo

        _, changed = PolicyRepo(self.core.conn).get(NESTING, nesting_rule.Nesting.ALLOW.value)
        nested = [info for info in self.vm_list() if info.nested]
        return HostPolicy(nesting=self._nesting().value, changed=changed, rule=nesting_rule.RULE,
                          nested_vms=[info.name for info in nested],
                          running_nested=[info.name for info in nested if info.state.value in ("running", "paused")])

    @audited("host.set-policy", lambda a: None if a["nesting"] is None else f"nesting={a['nesting']}")
    def host_set_policy(self, nesting: str | None = None) -> HostPolicy:
        """`nestor host set --nesting block|allow`; a block does not stop running VMs (host_policy lists them)."""
        if nesting is None:
            raise InvalidInput("nothing to change", hint="give --nesting block or --nesting allow")
        from ..state.hostpolicy import NESTING, PolicyRepo

        PolicyRepo(self.core.conn).set(NESTING, nesting_rule.parse(str(nesting)).value)
        return self.host_policy()

    def audit_list(self, since: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        """The audit log, oldest first: the newest `limit` entries at or after `since` (a unix
        time, a duration back from now such as 2h, or an ISO 8601 time)."""
        from ..state.audit import AuditRepo
        from .audit import parse_since, who

        if not 1 <= limit <= 100_000:
            raise InvalidInput(f"limit must be between 1 and 100000, not {limit}", hint="e.g. --limit 1000")
        start = None if since is None else parse_since(since, time.time())
        return [AuditEntry(who=who(row["via"], row["uid"], row["token"]), **row)
                for row in AuditRepo(self.core.conn).since(start, limit)]

    @audited("vm.exec", "target")
    def vm_exec(self, target: str, argv: list[str], timeout: float = guests.EXEC_TIMEOUT) -> ExecResult:
        self._local_only(target.split("/", 1)[0], "exec and the guest agent")
        return guests.vm_exec(self.core, target, argv, timeout)

    def vm_files(self, name: str) -> Path:
        """The VM's directory (for the front ends' file views: logs)."""
        self._local_only(name, "the console and its log")
        return self.core.vm_dir(self.core.vms.get(validate_name(name)))

    def vm_console_socket(self, name: str) -> Path:
        """The serial console's unix socket of a running VM."""
        self._local_only(name, "the console and its log")
        config = self.core.vms.get(validate_name(name))
        sock = self.core.files(config).serial_sock
        if not sock.exists():
            raise StateError(f"vm '{name}' is not running", hint=f"nestor vm start {name}")
        return sock

    def vm_log(self, name: str, follow: bool = False, until: str | None = None, timeout: float | None = None,
               tail: int | None = None) -> Iterator[bytes]:
        """The serial console's output; with `follow` it waits for more (until `until` appears,
        or `timeout` passes: StateError). `tail` starts that many bytes before the end; without
        it at most the last cap's worth of serial.log is read. The cap is applied first (the
        daemon's job, done here too in case the daemon is down); while following, a rotation
        (copytruncate) is followed: the rest of the old output from serial.log.1, then the new."""
        self._local_only(name, "the console and its log")
        if timeout is not None:
            guests.check_timeout(timeout)
        if tail is not None and tail < 0:
            raise InvalidInput(f"tail must not be negative, not {tail}", hint="e.g. --tail 4096")
        if until is not None and not until:
            raise InvalidInput("--until needs the text to wait for, not ''", hint="e.g. --until 'login:'")
        from ..engine import process, seriallog

        vm_files = self.core.files(self.core.vms.get(validate_name(name)))
        path = vm_files.serial_log
        older = seriallog.rotated(path)
        cap = seriallog.cap_from_env()
        seriallog.enforce(path, cap)
        follow = follow or until is not None
        deadline = time.monotonic() + timeout if timeout else None
        seen = b""
        needle = until.encode() if until is not None else None

        def tick() -> None:
            if deadline is not None and time.monotonic() > deadline:
                what = f"'{until}'" if until else "more output"
                raise StateError(f"vm '{name}': no {what} on the console in time",
                                 hint=f"nestor vm log {name} shows what it printed")
            time.sleep(LOG_POLL)

        while not path.exists():
            if not follow:
                return
            if timeout is None and process.live_pid(vm_files.dir) is None:  # never started: nothing will come
                raise StateError(f"vm '{name}' is off and has no console output to wait in",
                                 hint=f"nestor vm start {name} first (or give --timeout)")
            tick()
        off_once = False  # waiting for `until` without a timeout, the VM was seen off once

        def found(chunk: bytes) -> bool:
            nonlocal seen
            if needle is None:
                return False
            seen = (seen + chunk)[-(len(needle) + LOG_CHUNK):]
            return needle in seen

        while True:  # once per file: serial.log may be replaced (an older nestor's rename) while we follow it
            with open(path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - (cap if tail is None else tail)))
                tail = None
                mark = seriallog.identity(older)
                while True:
                    # Under a shared flock no rotation (which takes it exclusively) can happen
                    # between looking at serial.log.1 and reading serial.log.
                    with seriallog.reading(f.fileno()):
                        rest = b""
                        now = seriallog.identity(older)
                        if follow and now != mark:  # copytruncate: what we had not read yet ends serial.log.1
                            mark = now
                            rest = _rest_of(older, f.tell())
                            f.seek(0)
                        chunk = f.read(LOG_CHUNK)
                        shrunk = follow and os.fstat(f.fileno()).st_size < f.tell()
                    for data in (rest, chunk):
                        if data:
                            yield data
                            if found(data):
                                return
                    if chunk or rest:
                        continue
                    if not follow:
                        return
                    if shrunk:
                        f.seek(0)  # truncated without a copy we could see: start over
                        continue
                    if _rotated(path, f.fileno()):
                        break
                    if needle is not None and timeout is None and process.live_pid(vm_files.dir) is None:
                        if off_once:  # read to the end once more since: nothing more will come
                            raise StateError(f"vm '{name}' is off and '{(until or '')[:100]}' is not in its console output",
                                             hint=f"nestor vm start {name} first, or give --timeout S to wait for a start")
                        off_once = True
                        continue
                    seriallog.enforce(path, cap)  # the fallback cap, while the daemon is down
                    tick()

    def tree(self, timeout: float = guests.TREE_TIMEOUT) -> Tree:
        tree = guests.tree(self.core, timeout, level=self.core.facts.level)
        if self.remote.has_hosts():
            tree.hosts = self.remote.tree(timeout)
        return tree

    # -- reports across levels (service/report.py) ----------------------------------------------
    def host_check_tree(self, path: str = "", timeout: float = guests.TREE_TIMEOUT) -> dict[str, Any]:
        """`host check` of this level and of every level below (below PATH, if given)."""
        from . import report

        return self._report(path, timeout, report.check_tree, "host_check_tree")

    def bugreport(self, path: str = "", timeout: float = guests.TREE_TIMEOUT) -> dict[str, Any]:
        """The bug report of this level and of every level below (below PATH, if given)."""
        from . import report

        return self._report(path, timeout, report.bugreport, "bugreport")

    def _report(self, path: str, timeout: float, here: Callable[..., dict[str, Any]], method: str) -> dict[str, Any]:
        """A report of this level (`here`), or, below PATH, the same report method of the nestor there."""
        guests.check_timeout(timeout)
        if not path:
            return here(self.core, timeout, self.host_check)
        first, rest = self._below(path)
        with self._level(first, timeout) as inner:
            data: dict[str, Any] = getattr(inner, method)("/".join(rest), timeout=max(timeout - 5, 2))
            return data

    def _below(self, path: str) -> tuple[str, list[str]]:
        first, *rest = guests.split_target(path)
        self._local_only(first, "reports through the API channel")
        return first, rest

    def _level(self, name: str, timeout: float) -> Any:
        from . import channel

        return channel.client(self.core, name, timeout)

    # -- network: switches, adapters, NAT (service/network.py) ------------------------------------
    @audited("switch.new", lambda a: a["spec"].name)
    def switch_new(self, spec: SwitchSpec) -> SwitchInfo:
        net = self.core.network
        return net.switch_info(net.switch_new(spec.name, spec.type.value, spec.uplink, spec.move_addresses))

    def switch_list(self) -> list[SwitchInfo]:
        """Every switch; the home's default switch (service/default_switch.py) marked `default`."""
        default = self._default_switch()
        return [replace(sw, default=sw.name == default) for sw in self.core.network.switch_list()]

    def switch_show(self, name: str) -> SwitchDetail:
        detail = self.core.network.switch_show(name)
        return replace(detail, default=detail.name == self._default_switch())

    def _default_switch(self) -> str | None:
        from . import default_switch

        return default_switch.name(self.core)

    @audited("switch.set-ip")
    def switch_set_ip(self, name: str, address: str) -> SwitchInfo:
        """The host's ADDR/PREFIX on an internal or external switch (replaces the one it had)."""
        net = self.core.network
        return net.switch_info(net.switch_set_ip(name, address))

    @audited("switch.remove")
    def switch_remove(self, name: str, force: bool = False) -> SwitchRemoval:
        """The default switch goes with the NAT it was made with (of its name) once no adapter is
        on it, without --force; the next `vm new` that needs it makes both again."""
        net = self.core.network
        sw = net.store.switch(name)
        nat = net.store.nat_of_switch(sw.id)
        if (not force and name == self._default_switch() and nat is not None and nat.name == name
                and not net.store.adapters_on_switch(sw.id)):
            net.nat_remove(nat.name)
            return replace(net.switch_remove(name), nat=nat.name)
        return net.switch_remove(name, force=force)

    @audited("adapter.add", "vm")
    def adapter_add(self, vm: str, spec: AdapterSpec) -> AdapterInfo:
        net = self.core.network
        return net.adapter_info(net.adapter_add(vm, spec.switch, mac=spec.mac, name=spec.name))

    def adapter_list(self, vm: str) -> list[AdapterInfo]:
        return self.core.network.adapter_list(vm)

    @audited("adapter.set", _vm_and("name"))
    def adapter_set(self, vm: str, name: str | None, change: GuardChange) -> AdapterInfo:
        """MAC spoofing (R8) and the router/DHCP guards, applied at once (also while the VM runs)."""
        net = self.core.network
        return net.adapter_info(net.adapter_set(vm, name, mac_spoofing=change.mac_spoofing,
                                                router_guard=change.router_guard, dhcp_guard=change.dhcp_guard))

    @audited("adapter.remove", _vm_and("name"))
    def adapter_remove(self, vm: str, name: str) -> None:
        self.core.network.adapter_remove(vm, name)

    # NAT: this machine's (on an internal switch) or a libvirt NAT network on a libvirt host
    @audited("nat.new", lambda a: a["spec"].name)
    def nat_new(self, spec: NatSpec) -> NatInfo:
        if (spec.switch is None) == (spec.host is None):
            raise InvalidInput("a NAT needs either --switch (on this machine) or --host (a libvirt host)",
                               hint="nestor nat new NAME --switch SW --prefix CIDR, or --host H --prefix CIDR")
        if spec.host is not None:
            return self.remote.nats.nat_new(spec)
        assert spec.switch is not None
        if self.remote.owns_nat(spec.name):
            raise Conflict(f"nat '{spec.name}' already exists (on a libvirt host)", hint="choose another name")
        net = self.core.network
        return net.nat_info(net.nat_new(spec.name, spec.switch, spec.prefix, dhcp=spec.dhcp))

    def nat_list(self) -> list[NatInfo]:
        """This machine's NATs, then those on libvirt hosts."""
        nats = self.core.network.nat_list()
        if self.remote.has_nats():
            nats += self.remote.nats.nat_list()
        return nats

    def nat_show(self, name: str) -> NatInfo:
        if self.remote.owns_nat(name):
            return self.remote.nats.nat_show(name)
        net = self.core.network
        net.store.nat(name)  # an unknown name: NotFound, before any reconcile
        return next(n for n in net.nat_list() if n.name == name)

    @audited("nat.remove")
    def nat_remove(self, name: str) -> None:
        if self.remote.owns_nat(name):
            self.remote.nats.nat_remove(name)
        else:
            self.core.network.nat_remove(name)

    # -- images -------------------------------------------------------------------------------
    @audited("image.build", "image")
    def image_build(self, image: str, progress: Progress, force: bool = False) -> ImageInfo:
        from ..images import initramfs

        images = self.core.home.images
        if image == "appliance":
            initramfs.build_appliance(images, progress, force=force)
        elif image == "nested-host":
            from ..images import payload, rootfs

            initramfs.build_appliance(images, progress, force=force)
            rootfs.build_nested_host(images, progress, force=force)
            payload.build_payload(images, progress)
        else:
            raise InvalidInput(f"unknown image '{image}'", hint=f"images: {', '.join(bootplan.IMAGES)}")
        return self._image(image)

    def _image(self, image: str) -> ImageInfo:
        return ImageInfo(image, bootplan.image_built(self.core.home.images, image), str(self.core.home.image_dir(image)))

    def image_list(self) -> list[ImageInfo]:
        from ..images import publish

        publish.remove_leftovers(self.core.home.images)  # what a killed build or publish left
        return [self._image(image) for image in bootplan.IMAGES]

    # -- disk-image guests: service/diskvms.py, disks.py, checkpoints.py, ssh.py; images/store.py --
    @audited("vm.new")
    def vm_new_guest(self, name: str, guest: GuestSpec, vcpus: int = 1, memory: int = 512 << 20,
                     nested: bool = False, config_version: str | None = None) -> NewVM:
        from . import diskvms

        if nested:
            self._check_nesting(name, nesting_rule.Action.NEW)
        config, warnings, made = diskvms.create(self.core, name, vcpus, memory, nested, config_version, guest)
        return NewVM(self._vms.info(config), warnings, network=made)

    @audited("vm.new", lambda a: a["spec"].name)
    def vm_new_request(self, spec: VMSpec, guest: GuestSpec) -> NewVM:
        """`vm new` from one request that may describe any kind of VM (the API's POST /vms): a
        disk-image guest when the image is a stored one or a guest flag is given, else vm_new."""
        from ..policy import default_switch as default_switch_rules
        from . import diskvms

        default_switch_rules.wants_default(spec.switches, guest.no_network)  # no_network with switches: refused
        if not diskvms.is_guest_request(spec.image, guest):
            return self.vm_new(spec)
        if spec.host or spec.maximum is not None or spec.disk or spec.network:
            raise InvalidInput("host, maximum, disk and network are for VMs on libvirt hosts, not disk-image VMs",
                               hint="leave them out, or leave out the image and the guest fields")
        if spec.kernel or spec.initrd or spec.run_script or spec.append:
            raise InvalidInput("kernel, initrd, append and run_script are for the appliance; a disk-image VM boots its disk",
                               hint="leave them out, or leave out the image and the guest fields")
        guest = replace(guest, image=spec.image, switches=tuple(spec.switches))
        return self.vm_new_guest(spec.name, guest, vcpus=spec.vcpus, memory=spec.memory, nested=spec.nested,
                                 config_version=spec.config_version)

    @staticmethod
    def image_check_debian(request: DebianRequest) -> DebianRequest:
        """The Debian build request checked (release, packages, size, name) before any work."""
        from ..images import debian

        return debian.validate(request)

    @audited("image.build", lambda a: a["request"].image_name)
    def image_build_debian(self, request: DebianRequest, progress: Progress, force: bool = False) -> StoredImageInfo:
        from ..images import debian
        from . import diskvms

        name = debian.validate(request).image_name
        in_use = bool(diskvms.GuestRepo(self.core.conn).image_users(name))
        debian.build_debian(self.core.home.images, request, progress, force=force, in_use=in_use)
        return self._stored(name)

    @audited("image.import", lambda a: a["name"] or str(a["file"])[:200])
    def image_import(self, file: Path, name: str | None, progress: Progress, fmt: str | None = None,
                     force: bool = False) -> StoredImageInfo:
        from ..images import store

        image = store.import_image(self.core.home.images, file, name or store.name_from_file(file), progress,
                                   fmt=fmt, force=force)
        return self._stored(image.name)

    def _stored(self, name: str) -> StoredImageInfo:
        from ..images import store
        from . import diskvms

        image = store.get(self.core.home.images, name)
        info = store.qemu_img_info(image.path, "qcow2")
        return StoredImageInfo(name=image.name, source=image.source, format=str(info.get("format")),
                               virtual_size=int(info.get("virtual-size", 0)), allocated=int(info.get("actual-size", 0)),
                               used_by=diskvms.GuestRepo(self.core.conn).image_users(image.name), path=str(image.path))

    def image_store_list(self) -> list[StoredImageInfo]:
        from ..images import publish, store

        publish.remove_leftovers(store.store_dir(self.core.home.images))
        return [self._stored(image.name) for image in store.all_images(self.core.home.images)]

    @audited("image.remove")
    def image_remove(self, name: str) -> None:
        from ..images import store
        from . import diskvms

        store.validate_image_name(name)
        store.remove(self.core.home.images, name, diskvms.GuestRepo(self.core.conn).image_users(name))

    @audited("vm.disk.add", _vm_and("name"))
    def vm_disk_add(self, vm: str, name: str, size: int) -> DiskInfo:
        from . import disks

        return disks.add(self.core, vm, name, size)

    def vm_disk_list(self, vm: str) -> list[DiskInfo]:
        from . import disks

        return disks.listing(self.core, vm)

    @audited("vm.disk.resize", _vm_and("name"))
    def vm_disk_resize(self, vm: str, name: str, size: int) -> DiskResize:
        from . import disks

        return disks.resize(self.core, vm, name, size)

    @audited("vm.disk.remove", _vm_and("name"))
    def vm_disk_remove(self, vm: str, name: str) -> None:
        from . import disks

        disks.remove(self.core, vm, name)

    @audited("vm.checkpoint.new", _vm_and("name"))
    def vm_checkpoint_new(self, vm: str, name: str) -> CheckpointResult:
        from . import checkpoints

        return checkpoints.new(self.core, vm, name)

    def vm_checkpoint_list(self, vm: str) -> list[CheckpointInfo]:
        from . import checkpoints

        return checkpoints.listing(self.core, vm)

    @audited("vm.checkpoint.{action}", _vm_and("name"), refusals_only=True)
    def vm_checkpoint_check(self, vm: str, name: str, action: str) -> None:
        """Raise now what `vm_checkpoint_new` ('new') or `_apply` ('apply') would refuse (R12-R14,
        wrong state, unknown names): the API answers refusals before it starts an operation."""
        from . import checkpoints

        checkpoints.check(self.core, vm, name, action)

    @audited("vm.checkpoint.apply", _vm_and("name"))
    def vm_checkpoint_apply(self, vm: str, name: str) -> CheckpointResult:
        from . import checkpoints

        return checkpoints.apply(self.core, vm, name)

    @audited("vm.checkpoint.remove", _vm_and("name"))
    def vm_checkpoint_remove(self, vm: str, name: str) -> None:
        from . import checkpoints

        checkpoints.remove(self.core, vm, name)

    def vm_ssh_argv(self, vm: str, command: list[str], identity: Path | None = None) -> list[str]:
        """OpenSSH's argv to reach the VM (an argv for exec, never a shell string); `identity`: the
        private key to log in with (a lab's VM has its keys from the lab file, with none beside)."""
        from . import ssh

        target = ssh.target(self.core, vm)
        if identity is not None:
            target = replace(target, key=Path(os.path.abspath(identity)))
        return ssh.ssh_argv(target, ssh.known_hosts(self.core), command)

    def vm_address(self, vm: str) -> VMAddress:
        """Where the running VM can be reached (`vm ssh`): the DHCP lease, the guest agent, or --ip."""
        from . import ssh

        t = ssh.target(self.core, vm)
        return VMAddress(vm=vm, address=t.address, how=t.how, user=t.user, key=str(t.key) if t.key else None,
                         netns=t.netns)

    @audited("adapter.set-address", _vm_and("adapter"))
    def adapter_set_address(self, vm: str, adapter: str | None, ip: str | None, gateway: str | None,
                            dns: str | None, clear: bool = False) -> AddressResult:
        from . import diskvms

        return diskvms.set_address(self.core, vm, adapter, ip, gateway, dns, clear)


    # -- labs (nestor.lab: a tree of levels from one YAML file, docs/labs.md) -----------------------
    def _labs(self) -> Labs:
        from ..lab.session import Labs

        return Labs(self.home, self.core.netns)

    def level_report(self) -> LevelReport:
        """This level in one answer: its VMs, switches, adapters and NATs (what a lab's plan
        compares its file to); changes nothing, not even a NAT's repair (nestor/lab/level_report.py)."""
        from ..lab import level_report

        return level_report.report(self)

    def lab_plan(self, text: str, source: str | None = None) -> LabPlan:
        """What `lab up` of the lab file's TEXT would do, level by level, and why; changes nothing.
        `source`: where the caller read the text (errors name it)."""
        from ..lab import session

        return session.plan_text(self._labs(), text, source)

    @audited("lab.up", lambda a: _lab_name(a["text"]))
    def lab_up(self, text: str, progress: Progress = no_progress, source: str | None = None) -> LabUp:
        """Reconcile every level to the lab file's TEXT (preflight first; a second run has nothing to do)."""
        from ..lab import session

        return session.up_text(self._labs(), text, source, progress)

    def lab_list(self) -> list[LabInfo]:
        from ..lab import session

        return session.listed(self._labs())

    def lab_status(self, name: str) -> LabStatus:
        from ..lab import session

        return session.status_of(self._labs(), name)

    def lab_inventory(self, name: str) -> LabInventory:
        from ..lab import session

        return session.inventory_of(self._labs(), name)

    @audited("lab.down")
    def lab_down(self, name: str, progress: Progress = no_progress) -> LabDown:
        from ..lab import session

        return session.down_of(self._labs(), name, progress)

    @audited("lab.save")
    def lab_save(self, name: str, progress: Progress = no_progress) -> LabSaved:
        from ..lab import session

        return session.save_of(self._labs(), name, progress)

    @audited("lab.restore")
    def lab_restore(self, name: str, progress: Progress = no_progress) -> LabRestored:
        from ..lab import session

        return session.restore_of(self._labs(), name, progress)


def _lab_name(text: str) -> str | None:
    """The audit target of `lab up`: the lab's name, if the text says one."""
    import re

    found = re.search(r"^name:\s*['\"]?([a-z0-9][a-z0-9-]{0,62})['\"]?\s*$", text[:65536], re.MULTILINE)
    return found[1] if found else None


def _rest_of(older: Path, offset: int) -> bytes:
    """serial.log.1 from `offset` on: the old serial.log was copied there whole (while the
    daemon kept the log under twice the cap, so this is at most that much)."""
    try:
        with open(older, "rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""


def _rotated(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _qemu_user_check(option: str | None) -> list[CheckResult]:
    """As root: does the user QEMU drops root to exist, and how this QEMU is told (engine/runas.py)."""
    from ..engine import runas

    name = runas.wanted()
    if name is None:
        return []
    try:
        user = runas.lookup(name, option)
    except NestorError as exc:
        return [CheckResult("qemu user", False, exc.message, exc.hint or "")]
    return [CheckResult("qemu user", True, f"QEMU drops root to {user.name} (uid {user.uid}): {' '.join(user.argv())}")]
