"""One lock per home for network changes: renders of a namespace's nft tables never interleave."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..state.lock import LOCK_TIMEOUT, file_lock


def net_lock(path: Path, timeout: float = LOCK_TIMEOUT) -> contextlib.AbstractContextManager[None]:
    return file_lock(path, "the network configuration is busy: another nestor command holds its lock", timeout)
