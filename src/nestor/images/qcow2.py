"""A VM disk's qcow2 header, read by nestor itself before root opens the file again.

QEMU runs as the unprivileged QEMU user but keeps the read-write descriptors it opened on its
qcow2 files: an escaped QEMU can rewrite a header to name a backing file or an external data
file (/dev/sda, nestor.db, /etc/shadow). Anything root then opens by that header (the next
`vm start`, `qemu-img resize`, `snapshot`, `info`) would follow it as root. So before every
root-side open nestor reads the header here, without qemu-img (which is itself a parser of
untrusted input), and refuses a disk whose header is not what nestor wrote:

- the magic and version of qcow2 (2 or 3), nothing nestor does not know in the incompatible
  features beyond "dirty" and "corrupt" (so no external data file, bit 2);
- no external data file header extension;
- a backing file name exactly the one nestor gave it (the stored image of the root overlay) or
  none (data disks, blank roots), and if a backing format is named, the one nestor wrote.

Pure parsing of bytes (``parse``) apart from the one read (``read``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from ..errors import StateError

MAGIC = b"QFI\xfb"
HEADER_V2 = 72
MAX_HEADER = 1 << 16  # the header and its extensions live in the first cluster (>= 512 B, <= 2 MiB)
MAX_BACKING_NAME = 1023  # QEMU's own limit
EXT_END, EXT_BACKING_FORMAT, EXT_DATA_FILE = 0, 0xE2792ACA, 0x44415441
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_DATA_FILE = 1, 2, 4
INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | 8 | 16  # + compression type, extended L2
AUTOCLEAR_DATA_FILE_RAW = 2


@dataclass(frozen=True)
class Header:
    version: int
    backing: str | None
    backing_format: str | None
    data_file: str | None  # the external data file's name, or "" when only the feature bit says so
    incompatible: int

    @property
    def has_data_file(self) -> bool:
        return self.data_file is not None


class BadHeader(ValueError):
    """Not a qcow2 header nestor can read."""


def parse(data: bytes) -> Header:
    """The fields nestor checks, from the first bytes of a qcow2 file."""
    if len(data) < HEADER_V2 or data[:4] != MAGIC:
        raise BadHeader("not a qcow2 file (no QFI\\xfb magic)")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", data, 4)
    if version not in (2, 3):
        raise BadHeader(f"qcow2 version {version}")
    incompatible = autoclear = 0
    header_length = HEADER_V2
    if version == 3:
        if len(data) < 104:
            raise BadHeader("short qcow2 v3 header")
        incompatible, _compatible, autoclear = struct.unpack_from(">QQQ", data, 72)
        header_length = struct.unpack_from(">I", data, 100)[0]
        if header_length < 104 or header_length > len(data):
            raise BadHeader(f"header length {header_length}")
    backing = None
    if backing_offset:
        if backing_size > MAX_BACKING_NAME or backing_offset + backing_size > len(data):
            raise BadHeader("backing file name out of the header")
        backing = data[backing_offset:backing_offset + backing_size].decode("utf-8", "replace")
    backing_format = data_file = None
    if incompatible & INCOMPAT_DATA_FILE or autoclear & AUTOCLEAR_DATA_FILE_RAW:
        data_file = ""
    at = header_length
    while at + 8 <= len(data):
        kind, length = struct.unpack_from(">II", data, at)
        if kind == EXT_END:
            break
        body = data[at + 8:at + 8 + length]
        if len(body) < length:
            raise BadHeader("header extension out of the header")
        if kind == EXT_BACKING_FORMAT:
            backing_format = body.decode("utf-8", "replace")
        elif kind == EXT_DATA_FILE:
            data_file = body.decode("utf-8", "replace")
        at += 8 + ((length + 7) & ~7)
    return Header(version=version, backing=backing, backing_format=backing_format, data_file=data_file,
                  incompatible=incompatible)


def read(path: Path) -> Header:
    """The header of ``path`` (a regular file; a symlink or device is refused)."""
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadHeader("not a regular file")
        return parse(os.pread(fd, MAX_HEADER, 0))
    finally:
        os.close(fd)


def problem(header: Header, backing: Path | None, backing_format: str = "qcow2") -> str | None:
    """Why a VM disk's header is not the one nestor wrote, or None. Pure."""
    if header.has_data_file:
        return f"it names an external data file ({header.data_file or 'feature bit set'})"
    unknown = header.incompatible & ~INCOMPAT_KNOWN
    if unknown:
        return f"it has incompatible features nestor does not know ({unknown:#x})"
    if backing is None:
        if header.backing is not None or header.backing_format is not None:
            return f"it names a backing file {header.backing!r}, and this disk has none"
        return None
    if header.backing != str(backing):
        return f"it names the backing file {header.backing!r}, not its image {str(backing)!r}"
    if header.backing_format not in (None, backing_format):
        return f"it names the backing format {header.backing_format!r}, not {backing_format}"
    return None


def check(path: Path, backing: Path | None, what: str, backing_format: str = "qcow2") -> None:
    """Refuse (StateError) a VM disk whose header an escaped QEMU may have rewritten. ``backing``:
    the one file it may be an overlay of (as nestor wrote it), None for a disk that has none."""
    try:
        reason = problem(read(path), backing, backing_format)
    except (OSError, BadHeader) as exc:
        reason = str(exc.strerror if isinstance(exc, OSError) and exc.strerror else exc)
    if reason is not None:
        raise StateError(
            f"{what} ({path}) is refused: {reason}",
            hint="the header is not the one nestor wrote (a compromised QEMU may have rewritten it); "
                 "inspect it with qemu-img info as an unprivileged user, restore the disk from a backup or remove the VM",
        )
