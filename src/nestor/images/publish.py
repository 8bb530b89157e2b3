"""Atomic publication of built images: stage in a temp dir beside the final one, then rename.

Replacing an image swaps the two trees in one step (renameat2 RENAME_EXCHANGE): the final name
always holds a complete image, and the old tree lands where the new one was staged, inside the
build's own `.NAME-build-PID-*` directory, which is then removed. A kill at any point therefore
leaves at most that directory (with the new or the old tree), never a missing image. Leftovers of
processes that are gone are removed by the next build, publish or `image list`
(`remove_leftovers`). Filesystems without RENAME_EXCHANGE fall back to renaming the old tree
aside as `.NAME-old-PID-*` first; such a leftover is put back if the image is missing, else removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from .. import faults

MANIFEST = "manifest.json"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)-(?P<kind>build|old)-(?P<pid>\d+)-")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_NO_EXCHANGE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV)


class Staging:
    """A temp dir ``images_dir/.<name>-build-<pid>-XXXX``, removed on exit (also on error).

    Leftovers of builds whose process died (SIGKILL, power loss) are removed on entry.
    """

    def __init__(self, images_dir: Path, name: str) -> None:
        self._images_dir = images_dir
        self._prefix = f".{name}-build-"
        self.path: Path | None = None

    def __enter__(self) -> Path:
        self._images_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self._images_dir)
        self.path = Path(tempfile.mkdtemp(prefix=f"{self._prefix}{os.getpid()}-", dir=self._images_dir))
        self.path.chmod(0o755)  # apt downloads as _apt, which must reach a rootfs below it
        return self.path

    def __exit__(self, *_exc: object) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)


def remove_leftovers(directory: Path) -> list[str]:
    """Remove the staging (`.NAME-build-PID-*`) and set-aside (`.NAME-old-PID-*`) directories of
    processes that are gone; a set-aside tree whose image is missing is put back instead.
    Returns the names handled. Never raises for what it cannot remove (a read-only reader)."""
    handled: list[str] = []
    try:
        entries = sorted(directory.iterdir()) if directory.is_dir() else []
    except OSError:
        return handled
    for entry in entries:
        found = _LEFTOVER.match(entry.name)
        if found is None or pid_alive(int(found["pid"])):
            continue
        try:
            final = directory / found["name"]
            if found["kind"] == "old" and not final.exists():
                entry.rename(final)  # killed between setting the old tree aside and the new one's rename
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue
        handled.append(entry.name)
    return handled


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (renameat2 RENAME_EXCHANGE, Linux ≥ 3.15 on ext4/xfs/btrfs/tmpfs)."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError as exc:  # a C library without it
        raise OSError(errno.ENOSYS, "renameat2 is not available") from exc
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a), None, str(b))


def publish(stage: Path, final: Path) -> None:
    """Rename ``stage`` to ``final``. An older ``final`` is swapped out in one step and removed
    from where ``stage`` was (inside the build's staging directory): no debris on a kill."""
    stage.chmod(0o755)
    faults.point("image-publish:before-rename")
    if final.exists():
        try:
            exchange(stage, final)
        except OSError as exc:
            if exc.errno not in _NO_EXCHANGE:
                raise
            _publish_aside(stage, final)
        else:
            faults.point("image-publish:after-exchange")  # the new image is in place, the old one at `stage`
            shutil.rmtree(stage, ignore_errors=True)
    else:
        try:
            stage.rename(final)
        except OSError:
            if not final.exists():
                raise
            # Someone else published concurrently: keep theirs (the staging directory goes).
    remove_leftovers(final.parent)


def _publish_aside(stage: Path, final: Path) -> None:
    """Without RENAME_EXCHANGE: the old tree aside, the new one in (not atomic: a kill between
    the two renames leaves no image, and `remove_leftovers` puts the old one back)."""
    old = final.with_name(f".{final.name}-old-{os.getpid()}-{time.monotonic_ns()}")
    final.rename(old)
    try:
        stage.rename(final)
    except OSError:
        if not final.exists():
            old.rename(final)
            raise
    shutil.rmtree(old, ignore_errors=True)


def write_manifest(stage: Path, data: dict[str, object]) -> None:
    (stage / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(top: Path) -> dict[str, object] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((top / MANIFEST).read_text())
        if isinstance(data, dict):
            return data
    return None
