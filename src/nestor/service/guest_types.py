"""Typed input and output of the disk-image guest use cases (images, disks, checkpoints, ssh,
static addresses). Sizes in bytes, times in seconds (Unix time for dates), as in types.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AddressResult", "CheckpointInfo", "CheckpointResult", "DiskInfo", "DiskResize", "GuestSpec", "StoredImageInfo", "VMAddress",
]


@dataclass(frozen=True)
class GuestSpec:
    """`vm new` of a disk-image guest: the machine, the disk and cloud-init. Strings as given."""

    image: str | None = None
    generation: int = 1
    secure_boot: bool = False
    iso: Path | None = None
    disk_size: int | None = None  # bytes; None: the image's size
    user: str | None = None
    ssh_key: Path | None = None
    no_ssh_key: bool = False
    hostname: str | None = None
    cloud_init: Path | None = None
    tpm: bool = False  # a virtual TPM 2.0 (swtpm), as Windows 11 needs
    switches: tuple[str, ...] = field(default=())
    no_network: bool = False  # no adapter at all (without it and without switches: the default switch)


@dataclass(frozen=True)
class StoredImageInfo:
    name: str
    source: str  # "debian" | "import"
    format: str
    virtual_size: int
    allocated: int
    used_by: list[str]
    path: str


@dataclass(frozen=True)
class DiskInfo:
    name: str
    virtual_size: int
    allocated: int
    image: str | None  # the stored image under a root overlay
    file: str


@dataclass(frozen=True)
class DiskResize:
    disk: DiskInfo
    online: bool  # QMP block_resize on the running VM (else qemu-img resize)


@dataclass(frozen=True)
class CheckpointInfo:
    name: str
    created: float  # Unix time
    memory: bool  # taken while running: holds the VM's memory
    memory_size: int
    tpm: bool | None = None  # the VM's TPM setting at the checkpoint (None: taken before nestor recorded it)


@dataclass(frozen=True)
class CheckpointResult:
    vm: str
    checkpoint: str
    seconds: float
    tpm_restored: bool | None = None  # applying turned the TPM on (True) or off (False), as at the checkpoint


@dataclass(frozen=True)
class AddressResult:
    vm: str
    adapter: str
    mac: str
    ip: str | None  # None: DHCP
    gateway: str | None
    dns: list[str]


@dataclass(frozen=True)
class VMAddress:
    """Where a running VM can be reached (`vm ssh`), and how that address was found."""

    vm: str
    address: str
    how: str  # "dhcp lease" | "guest agent" | "static"
    user: str | None  # the cloud-init user
    key: str | None  # the private key beside the public key given at `vm new`
    netns: str | None  # the network namespace the address is reached from
