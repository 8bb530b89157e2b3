"""Every kernel name and file the network code creates, derived in one place.

Every host object carries its home's identity, so two homes can share a network namespace
without touching each other's objects: the *tag* is a short hash of the home's real path.

- bridges ``nsb<tag>-<switch id>`` and taps ``nst<tag>-<adapter id>``: kernel interface names
  are limited to IFNAMSIZ-1 = 15 bytes, so they carry the database id, never the user's name
  (which the store keeps); 3 + 5 + 1 leaves 6 digits for the id;
- nft tables ``bridge nestor_guard_<tag>`` and ``inet nestor_nat_<tag>``.

nestor only ever deletes names it derives from its own tag and ids.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

IFNAMSIZ = 16
TAG_LEN = 5
BRIDGE_PREFIX = "nsb"
TAP_PREFIX = "nst"

GUARD_FAMILY, GUARD_BASE = "bridge", "nestor_guard"
NAT_FAMILY, NAT_BASE = "inet", "nestor_nat"

# The guard's named counters, one per kind of rule and adapter: `<kind>_<tap>`.
GUARD_KINDS = ("mac", "arp", "nd", "vlan", "router", "dhcp")


def home_tag(root: Path) -> str:
    """A short, stable identity of a home: hex of the hash of its real path."""
    real = os.path.realpath(os.path.abspath(root))
    return hashlib.sha256(real.encode()).hexdigest()[:TAG_LEN]


def _ifname(prefix: str, tag: str, ident: int) -> str:
    name = f"{prefix}{tag}-{ident}"
    if len(name) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} exceeds IFNAMSIZ")
    return name


def bridge_name(tag: str, switch_id: int) -> str:
    return _ifname(BRIDGE_PREFIX, tag, switch_id)


def tap_name(tag: str, adapter_id: int) -> str:
    return _ifname(TAP_PREFIX, tag, adapter_id)


def guard_table(tag: str) -> str:
    return f"{GUARD_BASE}_{tag}"


def nat_table(tag: str) -> str:
    return f"{NAT_BASE}_{tag}"


def counter_name(kind: str, tap: str) -> str:
    """The nft named counter of frames of one kind the guard dropped for one tap."""
    return f"{kind}_{tap}"


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
