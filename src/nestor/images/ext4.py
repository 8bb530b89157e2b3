"""Raw ext4 disk images made from a directory tree (``mkfs.ext4 -d``: no loop mount, no root
needed for the image itself), and the tree helpers the image builds share."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from nestor.errors import ImageError

_TIMEOUT_MKFS = 600


def make_ext4(tree: Path, image: Path, size: int, label: str, journal: bool) -> None:
    """A sparse raw ext4 image of ``size`` bytes holding ``tree`` (mkfs.ext4 -d, no loop mount)."""
    image.unlink(missing_ok=True)
    with image.open("wb") as sink:
        sink.truncate(size)
    argv = ["mkfs.ext4", "-q", "-F", "-L", label, "-m", "0"]
    if not journal:
        argv += ["-O", "^has_journal"]
    argv += ["-d", str(tree), str(image)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_MKFS, check=False)
    except FileNotFoundError as exc:
        raise ImageError("mkfs.ext4 is not installed", hint="apt-get install e2fsprogs") from exc
    except subprocess.TimeoutExpired as exc:
        image.unlink(missing_ok=True)
        raise ImageError(f"mkfs.ext4 -d {tree} timed out after {_TIMEOUT_MKFS} s") from exc
    if proc.returncode != 0:
        image.unlink(missing_ok=True)
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ImageError(f"step mkfs.ext4 ({label}) failed: {detail[-1] if detail else proc.returncode}",
                         hint="e2fsprogs >= 1.43 is needed for mkfs.ext4 -d")


def round_mib(size: int) -> int:
    return -(-size // (1 << 20)) << 20


def link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def tree_size(root: Path) -> int:
    """Bytes allocated by a tree (each inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += max(st.st_blocks * 512, 0) or 4096
    return total


def describe_size(image: Path) -> str:
    st = image.stat()
    return f"{st.st_size >> 20} MiB, {st.st_blocks * 512 / 1e6:.0f} MB allocated"
