"""Bridges, taps and addresses through pyroute2 (IPRoute, or NetNS inside --netns).

Every function is idempotent: making what exists, or deleting what is gone, is not an error.
Reality may differ from the store (a killed QEMU leaves its persistent tap; a netns can be
deleted under us), so callers reconcile through these functions rather than assume.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import HostError, NotFound
from . import host


def _netlink_error() -> Any:
    """pyroute2's NetlinkError; pyroute2 is imported on first use (~1 s of start-up under TCG)."""
    from pyroute2 import NetlinkError

    return NetlinkError


@contextlib.contextmanager
def session(netns: str | None) -> Iterator[Any]:
    """A netlink socket in ``netns`` (root namespace if None); netlink errors become HostErrors."""
    host.require_netns(netns)  # NetNS() would otherwise *create* a missing namespace
    from pyroute2 import IPRoute, NetNS

    ipr = NetNS(netns) if netns else IPRoute()
    try:
        yield ipr
    except _netlink_error() as exc:
        if exc.code == errno.EPERM:
            raise HostError("netlink refused the change: CAP_NET_ADMIN is needed",
                            hint="run nestor as root") from exc
        raise HostError(f"netlink error: {exc.args[-1] if exc.args else exc}") from exc
    finally:
        ipr.close()


def index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def require(ipr: Any, ifname: str, netns: str | None) -> int:
    idx = index(ipr, ifname)
    if idx is None:
        where = f"network namespace '{netns}'" if netns else "the root network namespace"
        raise NotFound(f"interface '{ifname}' not found in {where}",
                       hint="ip link" + (f" (inside: ip -n {netns} link)" if netns else ""))
    return idx


def ensure_bridge(ipr: Any, ifname: str, mac: str, before_up: Callable[[], object] | None = None) -> bool:
    """Make the bridge (with a fixed MAC, so it never changes as ports come and go) and set it up.

    A bridge otherwise takes the lowest MAC of its ports: ARP caches of VMs would go stale.
    ``before_up`` runs while the link is still down (its IPv6 sysctls: set before the kernel
    gives it a link-local address or listens to a router advertisement). Returns whether it
    was created.
    """
    created = index(ipr, ifname) is None
    if created:
        ipr.link("add", ifname=ifname, kind="bridge")
    idx = index(ipr, ifname)
    if created:
        ipr.link("set", index=idx, address=mac)
    if before_up is not None:
        before_up()
    ipr.link("set", index=idx, state="up")
    return created


def delete(ipr: Any, ifname: str) -> bool:
    idx = index(ipr, ifname)
    if idx is None:
        return False
    try:
        ipr.link("del", index=idx)
    except _netlink_error() as exc:
        if exc.code != errno.ENODEV:
            raise
    return True


def enslave(ipr: Any, ifname: str, bridge: str, netns: str | None) -> None:
    idx = require(ipr, ifname, netns)
    ipr.link("set", index=idx, master=require(ipr, bridge, netns), state="up")


def release(ipr: Any, ifname: str) -> None:
    idx = index(ipr, ifname)
    if idx is not None:
        ipr.link("set", index=idx, master=0)


def fresh_tap(ipr: Any, ifname: str, bridge: str, netns: str | None,
              before_up: Callable[[], object] | None = None) -> None:
    """A new persistent tap on ``bridge``, up; one left by a killed QEMU is replaced.

    Recreating (rather than reusing) drops whatever state the old one had: a wrong master, a
    stale MTU or flags from another QEMU. ``before_up`` runs while it is still down. No owner:
    only CAP_NET_ADMIN opens it (nestor, which hands QEMU the descriptor: net/tapfd.py).
    """
    delete(ipr, ifname)
    ipr.link("add", ifname=ifname, kind="tuntap", mode="tap", iff_no_pi=True)
    if before_up is not None:
        before_up()
    enslave(ipr, ifname, bridge, netns)


@dataclass(frozen=True)
class LinkState:
    exists: bool
    up: bool = False
    master: str | None = None
    addresses: list[str] = field(default_factory=list)
    ports: list[str] = field(default_factory=list)
    rx_packets: int | None = None
    rx_dropped: int | None = None


def state(ipr: Any, ifname: str) -> LinkState:
    idx = index(ipr, ifname)
    if idx is None:
        return LinkState(exists=False)
    links = list(ipr.get_links())
    names = {int(lk["index"]): str(lk.get("ifname")) for lk in links}
    link = next(lk for lk in links if int(lk["index"]) == idx)
    master = link.get("master")
    stats = link.get("stats64") or {}
    return LinkState(
        exists=True,
        up=bool(link["flags"] & 1),
        master=names.get(int(master)) if master else None,
        addresses=[f"{a.get('address')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx, family=2)],
        ports=sorted(names[int(lk["index"])] for lk in links if lk.get("master") == idx),
        rx_packets=stats.get("rx_packets"),
        rx_dropped=stats.get("rx_dropped"),
    )


def set_address(ipr: Any, ifname: str, new: ipaddress.IPv4Interface | None,
                old: ipaddress.IPv4Interface | None, netns: str | None) -> None:
    """Replace the host address nestor put on ``ifname`` (others are left alone)."""
    idx = require(ipr, ifname, netns)
    if old is not None and old != new:
        with contextlib.suppress(_netlink_error()):  # already gone
            ipr.addr("del", index=idx, address=str(old.ip), prefixlen=old.network.prefixlen)
    if new is not None:
        try:
            ipr.addr("add", index=idx, address=str(new.ip), prefixlen=new.network.prefixlen)
        except _netlink_error() as exc:
            if exc.code != errno.EEXIST:
                raise


# -- an uplink's configuration (external switches, --move-addresses) ---------------------------
AF_INET, AF_INET6 = 2, 10
RT_TABLE_MAIN = 254
RTPROT_KERNEL, RTPROT_RA = 2, 9  # made with an address / learnt from a router advertisement


@dataclass(frozen=True)
class Route:
    family: int
    dst: str  # "" for a default route
    dst_len: int
    gateway: str | None
    priority: int | None
    device: str | None = None
    proto: int = 3  # RTPROT_BOOT, what `ip route add` gives by default; kept when moved

    def describe(self) -> str:
        target = f"{self.dst}/{self.dst_len}" if self.dst else "default"
        via = f" via {self.gateway}" if self.gateway else ""
        dev = f" dev {self.device}" if self.device else ""
        return f"route {target}{via}{dev}"


def addresses_of(ipr: Any, idx: int) -> list[tuple[int, str, int]]:
    """(family, address, prefixlen) of an interface, without link-local ones (the kernel's own)."""
    found = []
    for family in (AF_INET, AF_INET6):
        for a in ipr.get_addr(index=idx, family=family):
            addr = a.get_attr("IFA_ADDRESS")
            if addr is None or ipaddress.ip_address(addr).is_link_local:
                continue
            found.append((family, str(addr), int(a["prefixlen"])))
    return found


def routes_of(ipr: Any, idx: int | None = None, movable_only: bool = False) -> list[Route]:
    """Unicast routes of the main table (only those through interface ``idx`` if given).

    ``movable_only`` leaves out kernel routes (made with an address) and learnt ones (RA): they
    come back by themselves.
    """
    names = {int(lk["index"]): str(lk.get("ifname")) for lk in ipr.get_links()}
    found = []
    for family in (AF_INET, AF_INET6):
        for r in ipr.get_routes(family=family, table=RT_TABLE_MAIN):
            oif = r.get_attr("RTA_OIF")
            if idx is not None and oif != idx:
                continue
            if r.get_attr("RTA_TABLE", r["table"]) != RT_TABLE_MAIN or r["type"] != 1:
                continue
            if movable_only and r["proto"] in (RTPROT_KERNEL, RTPROT_RA):
                continue
            dst = r.get_attr("RTA_DST")
            found.append(Route(family=family, dst=str(dst) if dst else "", dst_len=int(r["dst_len"]),
                               gateway=r.get_attr("RTA_GATEWAY"), priority=r.get_attr("RTA_PRIORITY"),
                               device=names.get(int(oif)) if oif else None, proto=int(r["proto"])))
    return found


def add_address(ipr: Any, idx: int, address: str, prefixlen: int) -> None:
    try:
        ipr.addr("add", index=idx, address=address, prefixlen=prefixlen)
    except _netlink_error() as exc:
        if exc.code != errno.EEXIST:
            raise


def del_address(ipr: Any, idx: int, address: str, prefixlen: int) -> None:
    with contextlib.suppress(_netlink_error()):  # already gone
        ipr.addr("del", index=idx, address=address, prefixlen=prefixlen)


def add_route(ipr: Any, idx: int, route: Route) -> None:
    spec: dict[str, Any] = {"family": route.family, "oif": idx, "dst_len": route.dst_len, "table": RT_TABLE_MAIN,
                            "proto": route.proto}
    if route.dst:
        spec["dst"] = route.dst
    if route.gateway:
        spec["gateway"] = route.gateway
    if route.priority is not None:
        spec["priority"] = route.priority
    try:
        ipr.route("add", **spec)
    except _netlink_error() as exc:
        if exc.code != errno.EEXIST:
            raise


def del_route(ipr: Any, idx: int, route: Route) -> None:
    spec: dict[str, Any] = {"family": route.family, "oif": idx, "dst_len": route.dst_len, "table": RT_TABLE_MAIN}
    if route.dst:
        spec["dst"] = route.dst
    if route.gateway:
        spec["gateway"] = route.gateway
    with contextlib.suppress(_netlink_error()):  # already gone (with its address)
        ipr.route("del", **spec)
