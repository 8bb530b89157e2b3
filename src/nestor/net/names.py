"""Every kernel name and file the network code creates, derived in one place.

Kernel interface names are limited to IFNAMSIZ-1 = 15 bytes, so bridges and taps are named
after their database id, never after the user's name (which the store keeps).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IFNAMSIZ = 16
BRIDGE_PREFIX = "nsbr"
TAP_PREFIX = "nstap"

GUARD_FAMILY, GUARD_TABLE = "bridge", "nestor_guard"
NAT_FAMILY, NAT_TABLE = "inet", "nestor_nat"


def _ifname(prefix: str, ident: int) -> str:
    name = f"{prefix}{ident}"
    if len(name) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} exceeds IFNAMSIZ")
    return name


def bridge_name(switch_id: int) -> str:
    return _ifname(BRIDGE_PREFIX, switch_id)


def tap_name(adapter_id: int) -> str:
    return _ifname(TAP_PREFIX, adapter_id)


def counter_name(tap: str) -> str:
    """The nft named counter of frames the guard dropped for one tap."""
    return f"spoofed_{tap}"


@dataclass(frozen=True)
class NetFiles:
    """$HOME_DIR/net: the lock and each NAT's dnsmasq files."""

    dir: Path

    @property
    def lock(self) -> Path:
        return self.dir / "lock"

    def dnsmasq_pid(self, nat_id: int) -> Path:
        return self.dir / f"dnsmasq-{nat_id}.pid"

    def dnsmasq_leases(self, nat_id: int) -> Path:
        return self.dir / f"dnsmasq-{nat_id}.leases"

    def dnsmasq_log(self, nat_id: int) -> Path:
        return self.dir / f"dnsmasq-{nat_id}.log"
