"""Probe the host. Nothing here changes anything; every probe is cheap or has a timeout."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

QEMU_BINARY = "qemu-system-x86_64"
PROBE_TIMEOUT = 10.0
# Inside a nestor guest QEMU's own start (`--version`, `-help`) is emulated, under nested TCG for
# a level's guests: seen taking up to ~100 s at level 2 while the machine was loaded.
GUEST_PROBE_TIMEOUT = 120.0


def probe_timeout(level: int) -> float:
    """How long a QEMU probe may take on a host at nesting `level` (0: not a nestor guest)."""
    return PROBE_TIMEOUT if level == 0 else GUEST_PROBE_TIMEOUT

_KVM_CHECK_EXTENSION = 0xAE03
_KVM_CAP_MAX_VCPUS = 66


@dataclass(frozen=True)
class HostFacts:
    cpu_vendor: str  # "intel" | "amd" | "unknown"
    cpu_flags: frozenset[str]
    kvm_device: bool  # /dev/kvm exists
    kvm_kind: str  # "hardware" | "pvm" | "absent"
    kvm_module: str | None  # kvm_intel | kvm_amd | kvm_pvm | None
    kvm_nested: bool | None  # the nested parameter of kvm_intel/kvm_amd, None if not loaded
    kvm_max_vcpus: int | None
    qemu_path: str | None
    qemu_version: str | None
    mem_total: int  # bytes
    tsc_khz: int
    cpus: int
    level: int = 0  # 0 on a host nestor does not run in; N inside a nestor guest at level N
    # How this QEMU drops root: "run-with" (-run-with user=, QEMU >= 9.1), "runas" (-runas), None
    # (neither, or not probed: probe(qemu=False)). See engine/runas.py.
    qemu_user_option: str | None = None


    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu_flags"] = sorted(f for f in self.cpu_flags if f in ("vmx", "svm", "ept", "npt", "hypervisor"))
        return data


def _read(path: str) -> str:  # also runas.py
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str], int]:
    """Vendor, flags and TSC kHz (from 'cpu MHz') of the first CPU in /proc/cpuinfo."""
    vendor = "unknown"
    flags: frozenset[str] = frozenset()
    khz = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "vendor_id" and vendor == "unknown":
            vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(value, "unknown")
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "cpu MHz" and not khz:
            khz = int(float(value) * 1000)
    return vendor, flags, khz


def parse_meminfo(text: str) -> int:
    match = re.search(r"^MemTotal:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def parse_mem_available(text: str) -> int:
    """MemAvailable of /proc/meminfo in bytes (0 when absent)."""
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def mem_available() -> int:
    """This host's free memory now (the kernel's estimate of what can be given without swapping)."""
    return parse_mem_available(_read("/proc/meminfo"))


def _kvm_kind(modules: Path) -> tuple[str, str | None]:
    if not Path("/dev/kvm").exists():
        return "absent", None
    if (modules / "kvm_pvm").exists():
        return "pvm", "kvm_pvm"
    for name in ("kvm_intel", "kvm_amd"):
        if (modules / name).exists():
            return "hardware", name
    return "absent", None


def _nested_param(module: str | None, modules: Path) -> bool | None:
    if module not in ("kvm_intel", "kvm_amd"):
        return None
    value = _read(str(modules / module / "parameters" / "nested")).strip()
    return value in ("1", "Y", "y")


def _kvm_max_vcpus() -> int | None:
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        value = fcntl.ioctl(fd, _KVM_CHECK_EXTENSION, _KVM_CAP_MAX_VCPUS)
        return int(value) if value > 0 else None
    except OSError:
        return None
    finally:
        os.close(fd)


def parse_level(cmdline: str) -> int:
    """`nestor.level=N` on the kernel command line marks a guest that nestor started at level N."""
    match = re.search(r"(?:^|\s)nestor\.level=(\d+)", cmdline)
    return int(match.group(1)) if match else 0


def qemu_version(path: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"version (\d+\.\d+(\.\d+)?)", out)
    return match.group(1) if match else None


def parse_user_option(help_text: str) -> str | None:
    """From `qemu -help`: "run-with" if -run-with takes user= (QEMU >= 9.1, where -runas is
    deprecated), "runas" if only -runas exists, else None."""
    lines = help_text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("-run-with"):
            block = [line]  # the option's usage may continue on indented lines (QEMU >= 10)
            block += [more for more in lines[index + 1:index + 8] if more.startswith(" ")]
            if any("user=" in part for part in block):
                return "run-with"
    if any(line.startswith("-runas") for line in lines):
        return "runas"
    return None


def qemu_user_option(path: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Probe `path -help` for the way it drops root (parse_user_option)."""
    try:
        out = subprocess.run(
            [path, "-help"], capture_output=True, text=True, timeout=timeout, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_user_option(out)


def probe(modules: Path = Path("/sys/module"), qemu: bool = True) -> HostFacts:
    """All facts; qemu=False skips running QEMU for its version (hot paths like `vm start`)."""
    vendor, flags, khz = parse_cpuinfo(_read("/proc/cpuinfo"))
    kind, module = _kvm_kind(modules)
    qemu_path = shutil.which(QEMU_BINARY)
    level = parse_level(_read("/proc/cmdline"))
    wait = probe_timeout(level)
    return HostFacts(
        cpu_vendor=vendor,
        cpu_flags=flags,
        kvm_device=Path("/dev/kvm").exists(),
        kvm_kind=kind,
        kvm_module=module,
        kvm_nested=_nested_param(module, modules),
        kvm_max_vcpus=_kvm_max_vcpus() if kind == "hardware" else None,
        qemu_path=qemu_path,
        qemu_version=qemu_version(qemu_path, wait) if qemu_path and qemu else None,
        mem_total=parse_meminfo(_read("/proc/meminfo")),
        tsc_khz=khz,
        cpus=os.cpu_count() or 1,
        level=level,
        qemu_user_option=qemu_user_option(qemu_path, wait) if qemu_path and qemu else None,
    )
