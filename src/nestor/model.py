"""Pure data and validation: names, sizes, VM configuration and state."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from .errors import InvalidInput

NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")  # always fullmatch: `$` lets "web\n" through
MAX_NAME = 32
# ip-netns(8) names are file names under /run/netns; nestor takes a safe subset of them.
NETNS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_APPEND = 2048  # bytes of extra kernel command line (Linux's COMMAND_LINE_SIZE is 2048 on x86)

# VM configuration versions, in Hyper-V's numbering (the seed's prerequisites):
# nesting on Intel needs >= 8.0, on AMD (and TCG, which emulates AMD-V) >= 10.0.
CONFIG_VERSIONS = ("7.0", "8.0", "9.0", "10.0", "11.0")
CURRENT_CONFIG_VERSION = "11.0"


class VMState(enum.StrEnum):
    """What a VM is doing, observed from its QEMU process and QMP (never stored)."""

    OFF = "off"  # no QEMU process
    RUNNING = "running"  # QEMU alive, guest running
    PAUSED = "paused"  # QEMU alive, vCPUs stopped (QMP status not running)
    SAVED = "saved"  # no QEMU, and a saved state that `vm start` resumes (Hyper-V's Saved)


def validate_name(name: str, what: str = "vm") -> str:
    if not name:
        raise InvalidInput(f"{what} name is empty", hint="give a name such as 'web1'")
    if len(name) > MAX_NAME:
        raise InvalidInput(
            f"{what} name {shown(name)} is too long ({len(name)} characters, at most {MAX_NAME})",
            hint="use a shorter name",
        )
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} name {shown(name)}",
            hint="use lower-case letters, digits and '-', starting and ending with a letter or digit",
        )
    return name


# '512M', '512MB', '512MiB', '2g', '1024' (no unit: MiB), '512B' (bytes). ASCII digits only.
_SIZE_RE = re.compile(r" *([0-9]{1,15}) *(?:([KMGT])(?:i?B)?|(B))? *", re.IGNORECASE | re.ASCII)
_UNITS = {"": 1 << 20, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str, what: str = "memory") -> int:
    """The one size parser: '512M', '2G', '1024' (MiB), '512B' (bytes) into bytes.

    Zero, negative and garbage are refused here; whether a size is big enough for its use is
    the caller's rule (policy/memory.check_size for memory)."""
    match = _SIZE_RE.fullmatch(text)
    if not match:
        raise InvalidInput(
            f"invalid {what} size {shown(text)}", hint="use a positive size such as 512M or 2G"
        )
    number, unit = int(match.group(1)), (match.group(2) or match.group(3) or "").upper()
    if number == 0:
        raise InvalidInput(f"{what} size must be more than zero, not '{text}'", hint="e.g. 512M")
    return number * _UNITS[unit]


def shown(text: str, limit: int = 40) -> str:
    """User input quoted for an error line: control characters escaped, length bounded."""
    body = text if len(text) <= limit else text[:limit] + "…"
    return repr(body) if not body.isprintable() or "'" in body else f"'{body}'"


def validate_text(text: str, what: str, limit: int) -> str:
    """Free text bound for a kernel command line, QEMU, nft or dnsmasq: printable and bounded."""
    if len(text.encode()) > limit:
        raise InvalidInput(f"{what} is too long ({len(text.encode())} bytes, at most {limit})",
                           hint=f"shorten the {what}")
    bad = next((ch for ch in text if not ch.isprintable()), None)
    if bad is not None:
        raise InvalidInput(f"{what} contains the control character {bad!r}", hint="remove it")
    return text


def validate_netns(netns: str) -> str:
    """--netns: a name `ip netns add` accepts, in nestor's safe subset (no '/', no control characters)."""
    if not NETNS_RE.fullmatch(netns) or netns in (".", ".."):
        raise InvalidInput(f"invalid network namespace name {shown(netns)}",
                           hint="use letters, digits, '.', '_' and '-' (at most 64), e.g. --netns nt-web")
    return netns


def format_size(size: int) -> str:
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def version_tuple(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


def validate_config_version(version: str) -> str:
    if version not in CONFIG_VERSIONS:
        raise InvalidInput(
            f"unknown configuration version '{version}'",
            hint=f"use one of {', '.join(CONFIG_VERSIONS)}",
        )
    return version


@dataclass(frozen=True)
class BootSource:
    """How a VM boots: an image name, or an explicit kernel/initrd/append."""

    image: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    run_script: str | None = None  # appliance only: the script the guest runs


@dataclass(frozen=True)
class VMConfig:
    """The intent stored for a VM: what the user asked for."""

    name: str
    vcpus: int = 1
    memory: int = 512 << 20
    nested: bool = False
    config_version: str = CURRENT_CONFIG_VERSION
    boot: BootSource = field(default_factory=BootSource)
    id: int = 0
    # Memory (nestor/policy/memory.py resolves the defaults): `memory` above is the startup size.
    dynamic_memory: bool = False
    memory_minimum: int | None = None  # None: the default for dynamic memory
    memory_maximum: int | None = None  # None: startup (static) / the default (dynamic)
    memory_buffer: int = 20  # percent kept free above the guest's demand (dynamic memory)
    enlightenments: str = "off"  # "hyperv": the QEMU hv-* set (policy/enlightenments.py); "off"
    tpm: bool = False  # a virtual TPM 2.0 (swtpm, engine/swtpm.py): disk-image VMs only
