"""File locks: two commands that change the same thing never interleave (flock dies with its holder)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import Conflict
from ..files import private_dir

LOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def file_lock(path: Path, busy: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive flock on `path`; after `timeout` s of waiting raise Conflict(busy)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Conflict(busy, hint="wait for it to finish and try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def vm_lock(path: Path, name: str, timeout: float = LOCK_TIMEOUT) -> contextlib.AbstractContextManager[None]:
    """Per-VM lock: lifecycle commands on one VM run one at a time."""
    return file_lock(path, f"vm '{name}' is busy: another nestor command holds its lock", timeout)
