"""net.ipv4.ip_forward for NAT, left as nestor found it.

ip_forward is per network namespace, and several homes may run NATs in one namespace. The value
found before any nestor first turned forwarding on is recorded once per namespace under
/run/nestor (tmpfs: it goes with a reboot, as the setting does), keyed by the namespace's inode
(a deleted and re-made namespace is another one). It is restored, and the record dropped, once
no nestor NAT table of any home is left in the namespace.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from . import host, sysctl

KEY = "net.ipv4.ip_forward"
RECORD_DIR = Path("/run/nestor/ip_forward")


def _namespace_id(netns: str | None) -> str:
    path = host.NETNS_DIR / netns if netns else Path("/proc/self/ns/net")
    st = os.stat(path)
    return f"{st.st_dev}-{st.st_ino}"


def record_path(netns: str | None, directory: Path = RECORD_DIR) -> Path:
    return directory / _namespace_id(netns)


def enable(netns: str | None, directory: Path = RECORD_DIR) -> None:
    """Record the current value (first nestor in this namespace only), then turn forwarding on."""
    record = record_path(netns, directory)
    if not record.exists():
        found = sysctl.read(netns, KEY)
        record.parent.mkdir(parents=True, exist_ok=True)
        # Another home may record it first: theirs is as old as ours.
        with contextlib.suppress(FileExistsError), open(record, "x") as out:
            out.write(f"{found}\n")
    if sysctl.read(netns, KEY) != "1":
        sysctl.write(netns, {KEY: "1"})


def restore(netns: str | None, directory: Path = RECORD_DIR) -> str | None:
    """Put back the recorded value (call when no nestor NAT is left). Returns it, or None."""
    record = record_path(netns, directory)
    try:
        found = record.read_text().strip()
    except FileNotFoundError:
        return None
    if found in ("0", "1"):
        sysctl.write(netns, {KEY: found})
    record.unlink(missing_ok=True)
    return found
