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
from typing import TYPE_CHECKING, Any

from .. import bootplan
from ..errors import Conflict, InvalidInput, NestorError, StateError
from ..model import validate_name
from ..policy.checks import host_checks
from . import guests, memory
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
    Lease,
    NatInfo,
    NatSpec,
    SwitchDetail,
    SwitchInfo,
    SwitchRemoval,
    SwitchSpec,
)
from .remote import Remote
from .types import (
    CheckResult,
    ExecResult,
    HostInfo,
    HostReport,
    ImageInfo,
    MemoryChange,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    SaveResult,
    StopResult,
    Tree,
    VMInfo,
    VMSpec,
)
from .vms import VMs

if TYPE_CHECKING:
    from ..images.debian import DebianRequest

Progress = Callable[[str], None]
LOG_CHUNK = 65536
LOG_POLL = 0.1


class Service:
    def __init__(self, home: Path, netns: str | None = None, create: bool = True) -> None:
        """`create=False` (read-only and changing commands): a missing home is refused, not made."""
        self.core = Core(home, netns, create)
        self._vms = VMs(self.core)
        self.remote = Remote(self.core)  # VMs on libvirt hosts (service/remote.py)

    @property
    def home(self) -> Path:
        return self.core.home.root

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
        return sorted(local + self.remote.vm_list(), key=lambda info: info.name)

    def vm_show(self, name: str) -> VMInfo:
        if self.remote.owns(name):
            return self.remote.vm_show(name)
        return self._vms.show(name)

    def vm_new(self, spec: VMSpec) -> NewVM:
        if spec.host is not None:
            return self.remote.vm_new(spec)
        if spec.maximum is not None or spec.disk or spec.network:
            raise InvalidInput("--maximum, --disk and --network are for a VM on a libvirt host",
                               hint="add --host NAME (or --host auto)")
        return self._vms.new(spec)

    def vm_start(self, name: str) -> VMInfo:
        if self.remote.owns(name):
            return self.remote.vm_start(name)
        return self._vms.start(name)

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> StopResult:
        guests.check_timeout(timeout)
        if self.remote.owns(name):
            return self.remote.vm_stop(name, turn_off, timeout)
        return self._vms.stop(name, turn_off=turn_off, timeout=timeout)

    def vm_remove(self, name: str, force: bool = False) -> None:
        if self.remote.owns(name):
            return self.remote.vm_remove(name, force)
        self._vms.remove(name, force=force)

    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None) -> ProcessorResult:
        if self.remote.owns(name):
            return self.remote.vm_set_processor(name, count, nested)
        return self._vms.set_processor(name, count=count, nested=nested)

    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult:
        if self.remote.owns(name):
            return self.remote.vm_set_memory(name, change)
        return memory.set_memory(self.core, name, change)

    def vm_save(self, name: str) -> SaveResult:
        if self.remote.owns(name):
            return self.remote.vm_save(name)
        return memory.save(self.core, name, self._vms.stopped)

    def vm_reset_disk(self, name: str) -> bool:
        """Discard an Off VM's disk; True if it had one (the next start makes a fresh one)."""
        return self._vms.reset_disk(name)

    def vm_upgrade(self, name: str) -> VMInfo:
        self._local_only(name, "configuration versions")
        return self._vms.upgrade(name)

    def vm_move(self, name: str, host: str, progress: Progress = lambda line: None) -> MoveResult:
        """Live migration to another libvirt host (issue 12); refused while a hypervisor runs inside."""
        if not self.remote.owns(name):
            self._vms.show(validate_name(name))  # an unknown name: NotFound
            raise InvalidInput(f"vm '{name}' runs on this machine: only VMs on libvirt hosts can move",
                               hint="nestor vm new NAME --host H makes a VM on a libvirt host")
        return self.remote.vm_move(name, host, progress)

    def _local_only(self, name: str, what: str) -> None:
        if self.remote.owns(name):
            raise InvalidInput(f"vm '{name}' is on a libvirt host: {what} are for VMs on this machine",
                               hint=f"nestor vm show {name}")

    # -- libvirt hosts (issue 12) -----------------------------------------------------------------
    def host_add(self, name: str, uri: str) -> HostInfo:
        return self.remote.host_add(name, uri)

    def host_list(self) -> list[HostInfo]:
        return self.remote.host_list()

    def host_show(self, name: str) -> HostInfo:
        return self.remote.host_show(name)

    def host_remove(self, name: str) -> None:
        self.remote.host_remove(name)

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
                    seriallog.enforce(path, cap)  # the fallback cap, while the daemon is down
                    tick()

    def tree(self, timeout: float = guests.TREE_TIMEOUT) -> Tree:
        tree = guests.tree(self.core, timeout, level=self.core.facts.level)
        if self.remote.has_hosts():
            tree.hosts = self.remote.tree(timeout)
        return tree

    # -- network: switches, adapters, NAT (service/network.py) ------------------------------------
    def switch_new(self, spec: SwitchSpec) -> SwitchInfo:
        net = self.core.network
        return net.switch_info(net.switch_new(spec.name, spec.type.value, spec.uplink, spec.move_addresses))

    def switch_list(self) -> list[SwitchInfo]:
        return self.core.network.switch_list()

    def switch_show(self, name: str) -> SwitchDetail:
        return self.core.network.switch_show(name)

    def switch_set_ip(self, name: str, address: str) -> SwitchInfo:
        """The host's ADDR/PREFIX on an internal or external switch (replaces the one it had)."""
        net = self.core.network
        return net.switch_info(net.switch_set_ip(name, address))

    def switch_remove(self, name: str, force: bool = False) -> SwitchRemoval:
        return self.core.network.switch_remove(name, force=force)

    def adapter_add(self, vm: str, spec: AdapterSpec) -> AdapterInfo:
        net = self.core.network
        return net.adapter_info(net.adapter_add(vm, spec.switch, mac=spec.mac, name=spec.name))

    def adapter_list(self, vm: str) -> list[AdapterInfo]:
        return self.core.network.adapter_list(vm)

    def adapter_set(self, vm: str, name: str | None, change: GuardChange) -> AdapterInfo:
        """MAC spoofing (R8) and the router/DHCP guards, applied at once (also while the VM runs)."""
        net = self.core.network
        return net.adapter_info(net.adapter_set(vm, name, mac_spoofing=change.mac_spoofing,
                                                router_guard=change.router_guard, dhcp_guard=change.dhcp_guard))

    def adapter_remove(self, vm: str, name: str) -> None:
        self.core.network.adapter_remove(vm, name)

    # NAT: this machine's (on an internal switch) or a libvirt NAT network on a libvirt host
    def nat_new(self, spec: NatSpec) -> NatInfo:
        if (spec.switch is None) == (spec.host is None):
            raise InvalidInput("a NAT needs either --switch (on this machine) or --host (a libvirt host)",
                               hint="nestor nat new NAME --switch SW --prefix CIDR, or --host H --prefix CIDR")
        if spec.host is not None:
            return _remote_nat(self.remote.nats.new(spec.name, spec.host, spec.prefix, dhcp=spec.dhcp))
        assert spec.switch is not None
        if self.remote.owns_nat(spec.name):
            raise Conflict(f"nat '{spec.name}' already exists (on a libvirt host)", hint="choose another name")
        net = self.core.network
        return net.nat_info(net.nat_new(spec.name, spec.switch, spec.prefix, dhcp=spec.dhcp))

    def nat_list(self) -> list[NatInfo]:
        """This machine's NATs, then those on libvirt hosts."""
        nats = self.core.network.nat_list()
        if self.remote.has_nats():
            nats += [_remote_nat(row) for row in self.remote.nats.list()]
        return nats

    def nat_show(self, name: str) -> NatInfo:
        if self.remote.owns_nat(name):
            return next(n for n in self.nat_list() if n.name == name)
        net = self.core.network
        net.store.nat(name)  # an unknown name: NotFound, before any reconcile
        return next(n for n in net.nat_list() if n.name == name)

    def nat_remove(self, name: str) -> None:
        if self.remote.owns_nat(name):
            self.remote.nats.remove(name)
        else:
            self.core.network.nat_remove(name)

    # -- images -------------------------------------------------------------------------------
    def image_build(self, image: str, progress: Progress, force: bool = False) -> ImageInfo:
        from ..images import initramfs

        images = self.core.home.images
        if image == "appliance":
            initramfs.build_appliance(images, progress, force=force)
        elif image == "nested-host":
            from ..images import payload, rootfs

            initramfs.build_appliance(images, progress, force=force)
            rootfs.build_nested_host(images, progress, force=force)
            root = bootplan.source_root()
            if root is not None:
                payload.build_payload(images, root, progress)
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
    def vm_new_guest(self, name: str, guest: GuestSpec, vcpus: int = 1, memory: int = 512 << 20,
                     nested: bool = False, config_version: str | None = None) -> NewVM:
        from . import diskvms

        config, warnings = diskvms.create(self.core, name, vcpus, memory, nested, config_version, guest)
        return NewVM(self._vms.info(config), warnings)

    def vm_new_request(self, spec: VMSpec, guest: GuestSpec) -> NewVM:
        """`vm new` from one request that may describe any kind of VM (the API's POST /vms): a
        disk-image guest when the image is a stored one or a guest flag is given, else vm_new."""
        from . import diskvms

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

    def image_build_debian(self, request: DebianRequest, progress: Progress, force: bool = False) -> StoredImageInfo:
        from ..images import debian
        from . import diskvms

        name = debian.validate(request).image_name
        in_use = bool(diskvms.GuestRepo(self.core.conn).image_users(name))
        debian.build_debian(self.core.home.images, request, progress, force=force, in_use=in_use)
        return self._stored(name)

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

    def image_remove(self, name: str) -> None:
        from ..images import store
        from . import diskvms

        store.validate_image_name(name)
        store.remove(self.core.home.images, name, diskvms.GuestRepo(self.core.conn).image_users(name))

    def vm_disk_add(self, vm: str, name: str, size: int) -> DiskInfo:
        from . import disks

        return disks.add(self.core, vm, name, size)

    def vm_disk_list(self, vm: str) -> list[DiskInfo]:
        from . import disks

        return disks.listing(self.core, vm)

    def vm_disk_resize(self, vm: str, name: str, size: int) -> DiskResize:
        from . import disks

        return disks.resize(self.core, vm, name, size)

    def vm_disk_remove(self, vm: str, name: str) -> None:
        from . import disks

        disks.remove(self.core, vm, name)

    def vm_checkpoint_new(self, vm: str, name: str) -> CheckpointResult:
        from . import checkpoints

        return checkpoints.new(self.core, vm, name)

    def vm_checkpoint_list(self, vm: str) -> list[CheckpointInfo]:
        from . import checkpoints

        return checkpoints.listing(self.core, vm)

    def vm_checkpoint_check(self, vm: str, name: str, action: str) -> None:
        """Raise now what `vm_checkpoint_new` ('new') or `_apply` ('apply') would refuse (R12-R14,
        wrong state, unknown names): the API answers refusals before it starts an operation."""
        from . import checkpoints

        checkpoints.check(self.core, vm, name, action)

    def vm_checkpoint_apply(self, vm: str, name: str) -> CheckpointResult:
        from . import checkpoints

        return checkpoints.apply(self.core, vm, name)

    def vm_checkpoint_remove(self, vm: str, name: str) -> None:
        from . import checkpoints

        checkpoints.remove(self.core, vm, name)

    def vm_ssh_argv(self, vm: str, command: list[str]) -> list[str]:
        """OpenSSH's argv to reach the VM (an argv for exec, never a shell string)."""
        from . import ssh

        return ssh.ssh_argv(ssh.target(self.core, vm), ssh.known_hosts(self.core), command)

    def vm_address(self, vm: str) -> VMAddress:
        """Where the running VM can be reached (`vm ssh`): the DHCP lease, the guest agent, or --ip."""
        from . import ssh

        t = ssh.target(self.core, vm)
        return VMAddress(vm=vm, address=t.address, how=t.how, user=t.user, key=str(t.key) if t.key else None,
                         netns=t.netns)

    def adapter_set_address(self, vm: str, adapter: str | None, ip: str | None, gateway: str | None,
                            dns: str | None, clear: bool = False) -> AddressResult:
        from . import diskvms

        return diskvms.set_address(self.core, vm, adapter, ip, gateway, dns, clear)


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


def _remote_nat(row: dict[str, Any]) -> NatInfo:
    """A libvirt NAT network (remote/nats.py's row) in the one NAT type."""
    leases = [Lease(str(x["mac"]), str(x["ip"]), str(x["hostname"])) for x in row.get("leases", [])]
    return NatInfo(name=row["name"], switch=None, prefix=row["prefix"], gateway=row.get("gateway"), netns=None,
                   dhcp=bool(row["dhcp"]), leases=leases, host=row["host"], state=row.get("state"),
                   bridge=row.get("bridge"))


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
