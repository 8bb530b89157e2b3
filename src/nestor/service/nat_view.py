"""A stored NAT as shown: its gateway, its dnsmasq and its leases as they are now (read only: no
NAT is made real again here). Network.nat_info and the lab's level report (nestor/lab/level_report.py)
share it; it imports none of the modules that change the host (bridges, nft, sysctl)."""

from __future__ import annotations

import ipaddress
import sqlite3
from pathlib import Path

from ..net import dnsmasq, names
from ..net.store import Nat, NetStore
from .net_types import Lease, NatInfo


def store_of(conn: sqlite3.Connection, root: Path) -> tuple[NetStore, names.NetFiles]:
    """The home's network rows and files, as Network holds them (its tag: the home's identity)."""
    return NetStore(conn, names.home_tag(root)), names.NetFiles(root / "net")


def nat_info(store: NetStore, files: names.NetFiles, nat: Nat) -> NatInfo:
    sw = store.switch(nat.switch)
    leases = dnsmasq.leases(files.dnsmasq_leases(nat.id)) if nat.dhcp else []
    return NatInfo(
        name=nat.name, switch=nat.switch, prefix=nat.prefix,
        gateway=str(ipaddress.IPv4Interface(sw.address).ip) if sw.address else None,
        netns=nat.netns, dhcp=nat.dhcp,
        dnsmasq_pid=dnsmasq.live_pid(files.dnsmasq_pid(nat.id)) if nat.dhcp else None,
        leases=[Lease(mac=lease["mac"], ip=lease["ip"], hostname=lease["hostname"]) for lease in leases],
    )
