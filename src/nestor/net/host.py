"""Preconditions for changing the host's network: CAP_NET_ADMIN, and an existing netns."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import HostError, InvalidInput, NotFound

CAP_NET_ADMIN = 12
NETNS_DIR = Path("/run/netns")
NETNS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def has_net_admin(status: Path = Path("/proc/self/status")) -> bool:
    """CAP_NET_ADMIN in the effective capability set (root normally has it, a container may not)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def require_net_admin() -> None:
    if not has_net_admin():
        raise HostError(
            "changing bridges, taps and nft rules needs CAP_NET_ADMIN, which this process lacks",
            hint="run nestor as root (sudo nestor ...)",
        )


def validate_netns(netns: str) -> str:
    if not NETNS_RE.match(netns) or netns in (".", ".."):
        raise InvalidInput(f"invalid network namespace name '{netns}'",
                           hint="use letters, digits, '.', '_' and '-'")
    return netns


def require_netns(netns: str | None) -> None:
    """A given --netns must exist already: nestor never creates (or deletes) namespaces."""
    if netns is None:
        return
    validate_netns(netns)
    if not (NETNS_DIR / netns).exists():
        raise NotFound(f"network namespace '{netns}' does not exist", hint=f"ip netns add {netns}")
