"""One lock per home for network changes: renders of a namespace's nft tables never interleave."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import Conflict

LOCK_TIMEOUT = 60.0


@contextlib.contextmanager
def net_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Conflict("the network configuration is busy: another nestor command holds its lock",
                                   hint="wait for it to finish and try again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)
