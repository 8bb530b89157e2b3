"""Private files and directories: nestor's state is root's alone (home 0700, files 0600).

Modes are set explicitly (os.open with a mode, then fchmod/chmod), so the process umask never
decides them. A home made by an older nestor (0755, files 0644) is tightened on first use.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path, parents: bool = True) -> Path:
    """Make (or tighten) a directory only its owner can enter."""
    path.mkdir(mode=DIR_MODE, parents=parents, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def tighten(path: Path) -> None:
    """An existing file or directory of ours: 0600 / 0700 (missing is fine)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if os.path.islink(path):
        return
    mode = DIR_MODE if path.is_dir() else FILE_MODE
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """os.open with mode 0600 whatever the umask (and an existing file tightened)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes | str) -> None:
    """Replace `path` atomically with `data`, mode 0600."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    fd = open_private(tmp)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)
