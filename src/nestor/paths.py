"""Every path nestor uses, named in one place (DESIGN.md section 4)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "nestor.db"
QMP_SOCK = "qmp.sock"
SERIAL_SOCK = "serial.sock"
SERIAL_LOG = "serial.log"
QGA_SOCK = "qga.sock"
PIDFILE = "qemu.pid"
QEMU_LOG = "qemu.log"
LOCKFILE = "lock"
RUN_CPIO = "run.cpio"
INITRD = "initrd.img"
DISK = "disk.img"


def default_home() -> Path:
    env = os.environ.get("NESTOR_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/nestor")
    return Path.home() / ".local" / "share" / "nestor"


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def vms(self) -> Path:
        return self.root / "vms"

    def vm_dir(self, vm_id: int) -> Path:
        """Short per-VM directory: unix socket paths are limited to 108 bytes."""
        return self.vms / str(vm_id)

    def image_dir(self, name: str) -> Path:
        return self.images / name


@dataclass(frozen=True)
class VMFiles:
    """The files of one VM's directory."""

    dir: Path

    @property
    def serial_log(self) -> Path:
        return self.dir / SERIAL_LOG

    @property
    def serial_sock(self) -> Path:
        return self.dir / SERIAL_SOCK

    @property
    def qga_sock(self) -> Path:
        return self.dir / QGA_SOCK

    @property
    def qmp_sock(self) -> Path:
        return self.dir / QMP_SOCK
