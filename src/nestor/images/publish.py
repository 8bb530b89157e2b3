"""Atomic publication of built images: stage in a temp dir beside the final one, then rename.

A killed build leaves only a `.NAME-build-PID-*` directory, removed by the next build once that
PID is gone; readers only ever see a complete image with its manifest.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

MANIFEST = "manifest.json"


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
        remove_dead_builds(self._images_dir, self._prefix)
        self.path = Path(tempfile.mkdtemp(prefix=f"{self._prefix}{os.getpid()}-", dir=self._images_dir))
        self.path.chmod(0o755)  # apt downloads as _apt, which must reach a rootfs below it
        return self.path

    def __exit__(self, *_exc: object) -> None:
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)


def remove_dead_builds(images_dir: Path, prefix: str) -> None:
    for leftover in images_dir.glob(f"{prefix}*"):
        pid = leftover.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(stage: Path, final: Path) -> None:
    """Rename ``stage`` to ``final``, replacing an older ``final`` (its removal is not atomic,
    but the new tree only appears complete)."""
    stage.chmod(0o755)
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".{final.name}-old-{os.getpid()}-{time.monotonic_ns()}")
        final.rename(old)
    try:
        stage.rename(final)
    except OSError:
        if old is not None and not final.exists():
            old.rename(final)
            old = None
        if not final.exists():
            raise
        # Someone else published concurrently: keep theirs.
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_manifest(stage: Path, data: dict[str, object]) -> None:
    (stage / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_manifest(top: Path) -> dict[str, object] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads((top / MANIFEST).read_text())
        if isinstance(data, dict):
            return data
    return None
