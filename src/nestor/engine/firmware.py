"""Firmware for disk-image VMs, in Hyper-V's terms.

* Generation 1: BIOS. q35 with QEMU's default SeaBIOS; nothing to pass.
* Generation 2: UEFI. OVMF from Debian's ``ovmf`` package: the read-only code, and a per-VM copy
  of the variable store (``nvram.fd`` in the VM's directory) made at ``vm new`` from the
  matching template: the plain one, or with ``--secure-boot`` the one with Microsoft's keys
  enrolled (``OVMF_VARS_4M.ms.fd``) beside the secure-boot code built with SMM.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import files
from ..errors import HostError, InvalidInput
from .argv import Firmware

GENERATIONS = (1, 2)
OVMF_DIR = Path("/usr/share/OVMF")
NVRAM = "nvram.fd"


@dataclass(frozen=True)
class OvmfFiles:
    code: Path
    vars_template: Path


def validate_generation(generation: int, secure_boot: bool) -> None:
    if generation not in GENERATIONS:
        raise InvalidInput(f"unknown VM generation {generation}",
                           hint="use --generation 1 (BIOS) or --generation 2 (UEFI)")
    if secure_boot and generation != 2:
        raise InvalidInput("--secure-boot needs --generation 2 (UEFI)", hint="add --generation 2")


def ovmf_files(secure_boot: bool, top: Path = OVMF_DIR) -> OvmfFiles:
    if secure_boot:
        files = OvmfFiles(top / "OVMF_CODE_4M.secboot.fd", top / "OVMF_VARS_4M.ms.fd")
    else:
        files = OvmfFiles(top / "OVMF_CODE_4M.fd", top / "OVMF_VARS_4M.fd")
    for path in (files.code, files.vars_template):
        if not path.is_file():
            raise HostError(f"UEFI firmware file {path} is missing", hint="apt-get install ovmf")
    return files


def make_nvram(vm_dir: Path, secure_boot: bool) -> Path:
    """The VM's own variable store, copied from the template (once: it then belongs to the VM)."""
    nvram = vm_dir / NVRAM
    if not nvram.exists():
        shutil.copyfile(ovmf_files(secure_boot).vars_template, nvram)
        files.tighten(nvram)
    return nvram


def firmware(generation: int, secure_boot: bool, vm_dir: Path) -> Firmware | None:
    """What the argv builder needs: None for BIOS, OVMF code + the VM's NVRAM for UEFI."""
    if generation == 1:
        return None
    return Firmware(code=ovmf_files(secure_boot).code, vars=make_nvram(vm_dir, secure_boot),
                    secure_boot=secure_boot)
