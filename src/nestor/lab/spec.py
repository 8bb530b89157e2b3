"""A lab as pure data: a tree of levels. L0 is the level `nestor lab` runs on; a VM with
switches, NATs or VMs of its own holds the level inside it (its nestor)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

BUILT_IN = ("appliance", "nested-host")  # images.store.BUILT_IN: kernel-booted, no cloud-init


@dataclass(frozen=True)
class SwitchDef:
    name: str
    type: str  # internal | private
    address: str | None = None  # ADDR/PREFIX, the level's own address on it


@dataclass(frozen=True)
class NatDef:
    name: str
    switch: str
    prefix: str
    dhcp: bool = False


@dataclass(frozen=True)
class AdapterDef:
    switch: str
    mac: str | None = None
    mac_spoofing: bool = False
    ip: str | None = None  # the guest's ADDR/PREFIX (kernel command line; first adapter)
    gateway: str | None = None
    dhcp: bool = False


@dataclass(frozen=True)
class DynamicMemory:
    minimum: int | None = None
    maximum: int | None = None
    buffer: int | None = None


@dataclass(frozen=True)
class VMDef:
    name: str
    image: str = "appliance"
    cpus: int = 1
    memory: int = 512 << 20
    nested: bool = False
    dynamic: DynamicMemory | None = None
    adapters: tuple[AdapterDef, ...] = ()
    run: str | None = None  # appliance: the script's text
    ssh_keys: tuple[str, ...] = ()  # disk-image guest: the cloud-init user's authorized keys (key lines)
    host: str | None = None  # a libvirt host (or auto); L0 only
    inner: Level | None = None  # the level inside this VM (its own switches, NATs and VMs)
    cloud_init: str | None = None  # disk-image guest: its cloud-init user-data (text; replaces the default user and keys)

    @property
    def disk_guest(self) -> bool:
        """Booted from a stored disk image (`vm new --image debian-…`), not a built-in image."""
        return self.image not in BUILT_IN

    @property
    def is_hypervisor(self) -> bool:
        return self.inner is not None and bool(self.inner.vms or self.inner.switches or self.inner.nats)


@dataclass(frozen=True)
class Level:
    """One level: `path` is "" for L0, "hv1" inside hv1, "hv1/web" inside web inside hv1."""

    path: str = ""
    switches: dict[str, SwitchDef] = field(default_factory=dict)
    nats: dict[str, NatDef] = field(default_factory=dict)
    vms: dict[str, VMDef] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        return 0 if not self.path else self.path.count("/") + 1

    def walk(self) -> Iterator[Level]:
        """This level, then every level below it, parents before children."""
        yield self
        for vm in self.vms.values():
            if vm.inner is not None:
                yield from vm.inner.walk()

    def vm_path(self, name: str) -> str:
        return f"{self.path}/{name}" if self.path else name


@dataclass(frozen=True)
class Lab:
    name: str
    root: Level

    def levels(self) -> list[Level]:
        return list(self.root.walk())

    def level(self, path: str) -> Level:
        for level in self.root.walk():
            if level.path == path:
                return level
        raise KeyError(path)


def level_name(path: str) -> str:
    """How a level is named to people: L0, or `L2 (in hv1/web)`."""
    if not path:
        return "L0"
    return f"L{path.count('/') + 1} (in {path})"
