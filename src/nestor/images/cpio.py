"""A newc ("070701") cpio writer in pure Python: the format the kernel's initramfs unpacker reads.

No root and no cpio binary needed; entries are owned by root:root with mtime 0, so the same tree
always gives the same bytes. Archives are padded to 512 bytes so several can be concatenated
(the kernel unpacks each in turn: that is how a VM's run script rides on the appliance initrd).
"""

from __future__ import annotations

import os
from pathlib import Path

_S_IFDIR = 0o040000
_S_IFREG = 0o100000
_S_IFLNK = 0o120000
_S_IFCHR = 0o020000


class NewcWriter:
    """An in-memory newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._ino = 1
        self._size = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0), nlink: int = 1) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._put(header + encoded)
        self._put(data)

    def _put(self, blob: bytes) -> None:
        pad = -len(blob) % 4
        self._chunks.append(blob + b"\0" * pad)
        self._size += len(blob) + pad

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, _S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, _S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, _S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, _S_IFCHR | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        """The archive with its trailer, padded to 512 bytes so more archives can follow."""
        self._entry("TRAILER!!!", 0, nlink=1)
        tail = -self._size % 512
        return b"".join(self._chunks) + b"\0" * tail


def write_newc(root: Path, out: Path) -> None:
    """Archive the tree ``root`` (owned by root:root, mtime 0) plus /dev/console and /dev/null."""
    writer = NewcWriter()
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        perm = path.lstat().st_mode & 0o7777
        if path.is_symlink():
            writer.symlink(name, os.readlink(path))
        elif path.is_dir():
            writer.directory(name, perm)
        elif path.is_file():
            writer.file(name, path.read_bytes(), perm)
    # The kernel opens /dev/console for init before anything can mount devtmpfs.
    writer.chardev("dev/console", 5, 1, 0o600)
    writer.chardev("dev/null", 1, 3, 0o666)
    out.write_bytes(writer.finish())
