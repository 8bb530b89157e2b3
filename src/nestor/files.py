"""Private files and directories: nestor's state is root's alone (home 0700, files 0600).

Modes are set explicitly (os.open with a mode, then fchmod/chmod), so the process umask never
decides them. A home made by an older nestor (0755, files 0644) is tightened on first use.
"""

from __future__ import annotations

import os
import stat
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


# -- files a user names (CLI or API) ---------------------------------------------------------------
def regular_file(path: Path, what: str, hint: str) -> Path:
    """`path` as an absolute path to a regular file that is not a symbolic link (its directories may
    be links). A device (`/dev/zero`), FIFO, directory or link is refused: nestor opens such files as
    root, so the name must not be redirected to another file after a check. Raises NotFound or
    InvalidInput."""
    from .errors import InvalidInput, NotFound

    if "\x00" in str(path):
        raise InvalidInput(f"the {what} path contains a NUL character", hint=hint)
    absolute = Path(os.path.abspath(path))
    try:
        st = absolute.lstat()
    except FileNotFoundError:
        raise NotFound(f"{what} '{path}' not found", hint=hint) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} '{path}': {exc.strerror}", hint=hint) from None
    if stat.S_ISLNK(st.st_mode):
        raise InvalidInput(f"{what} '{path}' is a symbolic link (to '{os.readlink(absolute)}')",
                           hint="name the file itself, not a link to it")
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{what} '{path}' is not a regular file", hint=hint)
    return Path(os.path.realpath(absolute.parent)) / absolute.name


def read_capped(path: Path | None, limit: int, what: str, hint: str, regular: bool = True) -> bytes:
    """At most `limit` bytes of a user's file (None: standard input), read without ever holding more:
    a file that would not fit (`/dev/zero`, a huge file) is refused rather than exhausting memory.
    `regular`: only a regular file, not a link (see regular_file); else FIFOs such as `<(…)` too."""
    import sys

    from .errors import InvalidInput, NotFound

    if path is None:
        data = sys.stdin.buffer.read(limit + 1)
    else:
        if regular:
            path = regular_file(path, what, hint)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_NOFOLLOW if regular else 0))
        except FileNotFoundError:
            raise NotFound(f"{what} '{path}' not found", hint=hint) from None
        except OSError as exc:
            raise InvalidInput(f"cannot read {what} '{path}': {exc.strerror}", hint=hint) from None
        try:
            if regular and not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InvalidInput(f"{what} '{path}' is not a regular file", hint=hint)
            chunks, size = [], 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 20, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        except IsADirectoryError:
            raise InvalidInput(f"{what} '{path}' is a directory", hint=hint) from None
        finally:
            os.close(fd)
    if len(data) > limit:
        shown = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"
        raise InvalidInput(f"{what} '{path or '<stdin>'}' is larger than {shown}: nestor reads at most {shown} of it "
                           "(so a device such as /dev/zero or a huge file cannot exhaust memory)", hint=hint)
    return data


def within(path: Path, top: Path) -> bool:
    """Is `path` (links in it resolved) inside the directory `top` (links resolved)?"""
    real, base = os.path.realpath(path), os.path.realpath(top)
    return real.startswith(base.rstrip("/") + "/")
