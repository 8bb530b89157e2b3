"""net.ipv4.ip_forward for NAT, left as nestor found it.

ip_forward is per network namespace, and several homes may run NATs in one namespace. The value
found before any nestor first turned forwarding on is recorded *in the namespace itself*, as an
empty nft table ``inet nestor_ip_forward_was_<0|1>`` (no chain: it filters nothing), so the
record lives and dies with the setting it describes: a deleted namespace takes it along, a
re-made one (even with a recycled inode) starts without one. It is restored, and the record
dropped, once no home has a NAT table left in the namespace.
"""

from __future__ import annotations

from . import nft, sysctl

KEY = "net.ipv4.ip_forward"
FAMILY, RECORD_BASE = "inet", "nestor_ip_forward_was_"


def recorded(netns: str | None) -> str | None:
    """The value recorded in the namespace, if any."""
    for family, name in nft.tables(netns):
        if family == FAMILY and name.startswith(RECORD_BASE) and name[len(RECORD_BASE):] in ("0", "1"):
            return name[len(RECORD_BASE):]
    return None


def enable(netns: str | None) -> None:
    """Record the current value (the first nestor in this namespace only), then forward."""
    found = sysctl.read(netns, KEY)
    if recorded(netns) is None and found in ("0", "1"):
        nft.apply(netns, f"add table {FAMILY} {RECORD_BASE}{found}\n")
    if found != "1":
        sysctl.write(netns, {KEY: "1"})


def restore(netns: str | None) -> str | None:
    """Put back the recorded value (call when no nestor NAT is left). Returns it, or None."""
    found = recorded(netns)
    if found is None:
        return None
    sysctl.write(netns, {KEY: found})
    nft.apply(netns, f"delete table {FAMILY} {RECORD_BASE}{found}\n")
    return found
