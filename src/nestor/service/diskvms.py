"""Disk-image guests: a VM made from a stored image (or installer media) on a PC machine.

Such a VM is a q35 machine with firmware (generation 1: SeaBIOS, generation 2: OVMF with its
own NVRAM), a qcow2 root disk (an overlay on the image), data disks, a cloud-init NoCloud seed
made at every start from the VM's flags and its adapters, and the guest agent on
virtio-serial-pci. The appliance and nested-host stay microvm with direct kernel boot
(:mod:`nestor.bootplan`).

The service calls :func:`create` (``vm new`` with ``--image NAME`` from the store, ``--iso``, or
a guest flag) and :func:`launch_spec` (``vm start``); the rows live in ``vm_guests``,
``vm_disks`` and ``adapter_addresses`` (state/db.py).
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import cloudinit, files
from ..engine import argv as qemu_argv
from ..engine import firmware, swtpm
from ..errors import InvalidInput, NotFound, StateError
from ..images import store
from ..model import CURRENT_CONFIG_VERSION, BootSource, VMConfig, validate_config_version, validate_name
from ..net.revert import Reverter
from ..policy import accel as accel_policy
from ..policy import default_switch as default_switch_rules
from ..policy import memory as memory_rules
from ..policy import processor as rules
from . import default_switch, disks
from .guest_types import AddressResult, GuestSpec

if TYPE_CHECKING:
    from .core import Core

ROOT_FILE = "root.qcow2"
DEFAULT_BLANK_SIZE = 16 << 30


@dataclass(frozen=True)
class GuestConfig:
    vm_id: int
    generation: int = 1
    secure_boot: bool = False
    image: str | None = None
    iso: str | None = None
    user: str | None = None
    ssh_key: str | None = None  # the public key file given (or found) at `vm new`
    hostname: str | None = None
    user_data: str | None = None  # --cloud-init FILE's content


class GuestRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, g: GuestConfig) -> None:
        self.conn.execute(
            "INSERT INTO vm_guests (vm_id, generation, secure_boot, image, iso, user, ssh_key, hostname, user_data)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (g.vm_id, g.generation, int(g.secure_boot), g.image, g.iso, g.user, g.ssh_key, g.hostname, g.user_data),
        )

    def find(self, vm_id: int) -> GuestConfig | None:
        r = self.conn.execute("SELECT * FROM vm_guests WHERE vm_id = ?", (vm_id,)).fetchone()
        if r is None:
            return None
        return GuestConfig(vm_id=r["vm_id"], generation=r["generation"], secure_boot=bool(r["secure_boot"]),
                           image=r["image"], iso=r["iso"], user=r["user"], ssh_key=r["ssh_key"],
                           hostname=r["hostname"], user_data=r["user_data"])

    def image_users(self, image: str) -> list[str]:
        rows = self.conn.execute(
            "SELECT vms.name FROM vm_guests JOIN vms ON vms.id = vm_guests.vm_id WHERE vm_guests.image = ?"
            " ORDER BY vms.name", (image,))
        return [r["name"] for r in rows]

    def static_address(self, adapter_id: int) -> cloudinit.StaticAddress | None:
        r = self.conn.execute("SELECT * FROM adapter_addresses WHERE adapter_id = ?", (adapter_id,)).fetchone()
        if r is None:
            return None
        return cloudinit.StaticAddress(r["address"], r["gateway"], tuple(d for d in r["dns"].split(",") if d))

    def set_static_address(self, adapter_id: int, static: cloudinit.StaticAddress | None) -> None:
        self.conn.execute("DELETE FROM adapter_addresses WHERE adapter_id = ?", (adapter_id,))
        if static is not None:
            self.conn.execute("INSERT INTO adapter_addresses (adapter_id, address, gateway, dns) VALUES (?,?,?,?)",
                              (adapter_id, static.address, static.gateway, ",".join(static.dns)))


def is_guest_request(image: str | None, req: GuestSpec) -> bool:
    """Does `vm new` make a disk-image guest (rather than an appliance/nested-host/kernel VM)?"""
    flags = (req.iso, req.disk_size is not None, req.user is not None, req.ssh_key, req.hostname is not None,
             req.cloud_init, req.secure_boot, req.no_ssh_key, req.tpm)
    return (image is not None and image not in store.BUILT_IN) or any(flags) or req.generation != 1


# --------------------------------------------------------------------------------------------
# vm new
# --------------------------------------------------------------------------------------------


ISO_MAGIC_OFFSET, ISO_MAGIC = 0x8001, b"CD001"  # ISO 9660: the primary volume descriptor's standard identifier


def check_iso(path: Path) -> Path:
    """An installer ISO: a regular file (not a link or device), with no ',' in its path (QEMU's
    option separator), carrying the ISO 9660 signature. Checked at `vm new` and again at every
    start (QEMU opens it by path each time)."""
    hint = "give an ISO 9660 installer image to --iso"
    path = files.regular_file(path, "ISO file", hint)
    if "," in str(path):
        raise InvalidInput(f"ISO path '{path}' contains ','", hint="QEMU reads ',' as an option separator: rename the file")
    try:
        with open(path, "rb") as f:
            f.seek(ISO_MAGIC_OFFSET)
            magic = f.read(len(ISO_MAGIC))
    except OSError as exc:
        raise InvalidInput(f"cannot read ISO file '{path}': {exc.strerror}", hint=hint) from None
    if magic != ISO_MAGIC:
        raise InvalidInput(f"'{path}' is not an ISO image (no ISO 9660 signature CD001 at offset 0x8001)", hint=hint)
    return path


def validate_request(core: Core, req: GuestSpec) -> tuple[GuestConfig, store.StoredImage | None, int | None]:
    """Every flag checked before anything is made (bad input changes nothing)."""
    firmware.validate_generation(req.generation, req.secure_boot)
    if req.generation == 2:
        firmware.ovmf_files(req.secure_boot)
    image = store.get(core.home.images, req.image) if req.image else None
    iso = str(check_iso(req.iso)) if req.iso else None
    if image is None and iso is None:
        raise InvalidInput("a disk-image VM needs --image NAME or --iso FILE",
                           hint="nestor image list shows the images; or --iso installer.iso")
    size = disks.check_size(req.disk_size) if req.disk_size is not None else None
    if req.cloud_init and (req.user or req.ssh_key):
        raise InvalidInput("--cloud-init excludes --user and --ssh-key (your user-data makes the users)",
                           hint="put the user and key into your cloud-init file, or drop --cloud-init")
    if req.ssh_key and req.no_ssh_key:
        raise InvalidInput("--ssh-key and --no-ssh-key exclude each other", hint="give one of them")
    user = cloudinit.validate_user(req.user) if req.user is not None else None
    hostname = cloudinit.validate_hostname(req.hostname) if req.hostname is not None else None
    key_file: Path | None = None
    if req.ssh_key:
        key_file = req.ssh_key
    elif not req.cloud_init and not req.no_ssh_key:
        key_file = cloudinit.default_public_key()
    if key_file is not None:
        cloudinit.read_public_key(key_file)
    user_data = cloudinit.read_user_data(req.cloud_init) if req.cloud_init else None
    if image is None and (user or req.ssh_key or hostname or user_data):
        raise InvalidInput("cloud-init flags need --image (an installer ISO does not read them)",
                           hint="add --image NAME, or drop --user/--ssh-key/--hostname/--cloud-init")
    guest = GuestConfig(vm_id=0, generation=req.generation, secure_boot=req.secure_boot,
                        image=image.name if image else None, iso=iso,
                        user=user or (None if user_data or image is None else cloudinit.DEFAULT_USER),
                        ssh_key=str(key_file.resolve()) if key_file else None, hostname=hostname,
                        user_data=user_data)
    return guest, image, size


def create(core: Core, name: str, vcpus: int, memory: int, nested: bool, config_version: str | None,
           req: GuestSpec) -> tuple[VMConfig, list[str], str | None]:
    """`vm new` of a disk-image guest: every flag checked first, then the VM, its disk, its NVRAM
    and its adapters, undone together on failure. Without --switch and --no-network its one
    adapter is on the default switch, made now if missing (service/default_switch.py): the third
    item says what was made."""
    validate_name(name)
    config_version = validate_config_version(config_version or CURRENT_CONFIG_VERSION)
    accel = accel_policy.choose(core.facts)
    warnings = rules.check_vcpus(vcpus, nested, accel)
    memory_rules.check_size(memory, "VM", core.facts.mem_total, option="--memory")
    if nested:
        rules.check_nesting_version(name, config_version, accel)
    guest, image, size = validate_request(core, req)
    for switch in req.switches:
        core.network.store.switch(switch)  # an unknown switch fails before the VM exists
    wanted = default_switch_rules.wants_default(req.switches, req.no_network)
    with Reverter() as revert:
        switches, made = req.switches, None
        if wanted:
            network = default_switch.ensure(core, revert)
            switches, made = ((network.switch,) if network.switch else ()), network.made
            if network.warning:
                warnings = [*warnings, network.warning]
        config = core.vms.add(VMConfig(name=name, vcpus=vcpus, memory=memory, nested=nested,
                                       config_version=config_version, boot=BootSource(image=guest.image),
                                       tpm=req.tpm))
        revert.add(lambda: core.vms.remove(config.id))
        vm_dir = core.vm_dir(config)
        if vm_dir.exists():
            shutil.rmtree(vm_dir)
        files.private_dir(vm_dir.parent, parents=False)
        files.private_dir(vm_dir, parents=False)
        revert.add(lambda: shutil.rmtree(vm_dir, ignore_errors=True))
        GuestRepo(core.conn).add(replace(guest, vm_id=config.id))
        root = vm_dir / ROOT_FILE
        if image is not None:
            disks.create_overlay(image, root, size)
        else:
            disks.create_blank(root, size or DEFAULT_BLANK_SIZE)
        disks.DiskRepo(core.conn).add(config.id, disks.ROOT, root)
        if guest.generation == 2:
            firmware.make_nvram(vm_dir, guest.secure_boot)
        if req.tpm:
            swtpm.make_state(vm_dir, None)  # handed to the QEMU user at each start
        revert.add(lambda: core.network.forget(config))
        for switch in switches:
            core.network.adapter_add(config.name, switch)
        revert.success()
    return config, warnings, made


# --------------------------------------------------------------------------------------------
# vm start
# --------------------------------------------------------------------------------------------


def find(core: Core, config: VMConfig) -> GuestConfig | None:
    return GuestRepo(core.conn).find(config.id)


def seed_spec(core: Core, config: VMConfig, guest: GuestConfig) -> cloudinit.SeedSpec:
    repo = GuestRepo(core.conn)
    nics = tuple(cloudinit.NicConfig(a.mac, repo.static_address(a.id))
                 for a in core.network.store.adapters_of_vm(config.id))
    keys: tuple[str, ...] = ()
    if guest.ssh_key:
        keys = cloudinit.read_public_keys(Path(guest.ssh_key))
    return cloudinit.SeedSpec(
        instance_id=f"nestor-{config.id}-{config.name}", hostname=guest.hostname or config.name,
        user=guest.user, ssh_keys=keys, user_data=guest.user_data, nics=nics)


def cpu_model(accel: accel_policy.Accel, nested: bool) -> str:
    """The seed's processor rule (``accel.cpu_model``), and under TCG no 5-level paging.

    Measured: with TCG's ``-cpu max`` (which offers LA57) Debian's systemd fails its mount
    units ("Mount process finished, but there is no mount"), udevd (mount namespacing: EBUSY)
    and random-seed (fsync: EINVAL); with ``la57=off`` (or ``-cpu EPYC``) it boots cleanly.
    SVM stays exactly as the rule says.
    """
    model = accel.cpu_model(nested)
    return f"{model},la57=off" if accel.name == "tcg" and model.startswith("max") else model


def launch_spec(core: Core, config: VMConfig, accel: accel_policy.Accel, guest: GuestConfig,
                memory: int) -> qemu_argv.LaunchSpec:
    """The q35 machine of a disk-image guest. The processor rules are the same as for microvm
    (``accel.cpu_model``); nothing microvm-specific (tsc_early_khz, a kernel line) is passed."""
    vm_dir = core.vm_dir(config)
    rows = disks.checked(core, config, disks.DiskRepo(core.conn).of_vm(config.id))
    drives = tuple(qemu_argv.Disk(d.file, "qcow2", id=d.drive_id, boot=d.name == disks.ROOT, cache="writeback",
                                  backing=disks.backing_of(core, config, d), pin_backing=True)
                   for d in rows)
    cdroms: list[qemu_argv.Cdrom] = []
    if guest.iso:
        if not Path(guest.iso).is_file():
            raise NotFound(f"ISO file '{guest.iso}' of vm '{config.name}' is gone", hint="put it back")
        check_iso(Path(guest.iso))  # QEMU opens it by path at each start: it may have become a link since
        cdroms.append(qemu_argv.Cdrom(Path(guest.iso), "cd-install", boot=True))
    if guest.image is not None:
        cdroms.append(qemu_argv.Cdrom(cloudinit.write_seed(seed_spec(core, config, guest), vm_dir), "cd-seed"))
    return qemu_argv.LaunchSpec(
        name=config.name, vm_dir=vm_dir, accel=accel.name, cpu_model=cpu_model(accel, config.nested),
        vcpus=config.vcpus, memory=memory, kernel=None, disks=drives, cdroms=tuple(cdroms),
        agent=True, machine="q35", firmware=firmware.firmware(guest.generation, guest.secure_boot, vm_dir),
    )


# --------------------------------------------------------------------------------------------
# adapter set --ip
# --------------------------------------------------------------------------------------------


def set_address(core: Core, vm: str, adapter_name: str | None, ip: str | None, gateway: str | None,
                dns: str | None, clear: bool = False) -> AddressResult:
    config = core.vms.get(validate_name(vm))
    if GuestRepo(core.conn).find(config.id) is None:
        raise InvalidInput(f"vm '{vm}' is not a disk-image VM: --ip is applied through cloud-init",
                           hint="static addresses work for VMs made with --image NAME from the image store")
    adapters = core.network.store.adapters_of_vm(config.id)
    if adapter_name is None and len(adapters) == 1:
        adapter = adapters[0]
    else:
        matches = [a for a in adapters if a.name == adapter_name]
        if not matches:
            raise NotFound(f"vm '{vm}' has no adapter '{adapter_name}'" if adapter_name
                           else f"vm '{vm}' has {len(adapters)} adapters: name one with --name",
                           hint=f"nestor adapter list {vm}")
        adapter = matches[0]
    if clear:
        static = None
    else:
        if ip is None:
            raise InvalidInput("--gateway and --dns need --ip", hint="e.g. --ip 192.168.100.10/24 --gateway 192.168.100.1")
        static = cloudinit.parse_static(ip, gateway, [d for d in (dns or "").split(",") if d])
    if core.observe(config)[0].value != "off":
        raise StateError(f"vm '{vm}' is running: its address is given to cloud-init at start",
                         hint=f"nestor vm stop {vm}, set it, then start it")
    GuestRepo(core.conn).set_static_address(adapter.id, static)
    return AddressResult(vm=vm, adapter=adapter.name, mac=adapter.mac, ip=static.address if static else None,
                         gateway=static.gateway if static else None, dns=list(static.dns) if static else [])
