"""`vm new` flags for disk-image guests (nestor/guests.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..model import parse_size
from ..service.diskvms import is_guest_request
from ..service.guest_types import GuestSpec
from . import numbers

__all__ = ["guest_options", "guest_spec", "is_guest_request"]

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--generation", type=numbers.INT, default=1, show_default=True,
                 help="disk-image VMs: 1 = BIOS (SeaBIOS), 2 = UEFI (OVMF), as in Hyper-V"),
    click.option("--secure-boot", is_flag=True, help="generation 2: UEFI secure boot (Microsoft keys enrolled)"),
    click.option("--iso", type=click.Path(path_type=Path), default=None,
                 help="installer media, booted before the disk"),
    click.option("--disk-size", default=None, help="grow the VM's disk to this size (e.g. 20G)"),
    click.option("--user", default=None, help="cloud-init: the user to create (default: debian)"),
    click.option("--ssh-key", type=click.Path(path_type=Path), default=None,
                 help="cloud-init: public key for the user (default: ~/.ssh/id_*.pub if one exists)"),
    click.option("--no-ssh-key", is_flag=True, help="cloud-init: do not add the default public key"),
    click.option("--hostname", default=None, help="cloud-init: the guest's hostname (default: the VM name)"),
    click.option("--cloud-init", type=click.Path(path_type=Path), default=None,
                 help="cloud-init: your own user-data file (replaces --user/--ssh-key)"),
    click.option("--tpm", is_flag=True, help="disk-image VMs: a virtual TPM 2.0 (swtpm), as Windows 11 needs"),
]


def guest_options(func: F) -> F:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def guest_spec(image: str | None, switches: tuple[str, ...], flags: dict[str, Any]) -> GuestSpec:
    return GuestSpec(
        image=image, generation=flags["generation"], secure_boot=flags["secure_boot"], iso=flags["iso"],
        disk_size=parse_size(flags["disk_size"], "disk") if flags["disk_size"] is not None else None,
        user=flags["user"], ssh_key=flags["ssh_key"], no_ssh_key=flags["no_ssh_key"],
        hostname=flags["hostname"], cloud_init=flags["cloud_init"], tpm=flags["tpm"], switches=switches,
        no_network=flags["no_network"],
    )
