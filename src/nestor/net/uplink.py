"""An external switch's uplink configuration, moved onto its bridge and back (--move-addresses).

Hyper-V's "allow the management OS to share this network adapter": once the uplink is a bridge
port, the host's addresses and routes must live on the bridge, or the host loses the network.
The configuration moved is recorded (JSON in the switch's row) so `switch remove` puts it back.
Link-local addresses and the kernel's own routes are not moved: they follow by themselves.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from . import netlink


@dataclass(frozen=True)
class UplinkConfig:
    addresses: tuple[tuple[int, str, int], ...]  # (family, address, prefixlen)
    routes: tuple[netlink.Route, ...]

    @property
    def empty(self) -> bool:
        return not self.addresses and not self.routes

    def describe(self) -> str:
        parts = [f"{addr}/{plen}" for _, addr, plen in self.addresses]
        parts += [r.describe() for r in self.routes]
        return ", ".join(parts)


def dumps(cfg: UplinkConfig) -> str:
    return json.dumps({"addresses": [list(a) for a in cfg.addresses],
                       "routes": [asdict(r) | {"device": None} for r in cfg.routes]})


def loads(text: str) -> UplinkConfig:
    data = json.loads(text)
    return UplinkConfig(addresses=tuple((int(f), str(a), int(p)) for f, a, p in data["addresses"]),
                        routes=tuple(netlink.Route(**r) for r in data["routes"]))


def read(ipr: Any, idx: int) -> UplinkConfig:
    """What the host has on the interface: addresses (not link-local), routes (not the kernel's)."""
    return UplinkConfig(addresses=tuple(netlink.addresses_of(ipr, idx)),
                        routes=tuple(netlink.routes_of(ipr, idx, movable_only=True)))


def carries_default_route(ipr: Any, idx: int) -> bool:
    return any(r.dst_len == 0 for r in netlink.routes_of(ipr, idx))


def put(ipr: Any, idx: int, cfg: UplinkConfig) -> None:
    """Addresses first (a gateway must be reachable), then routes. Idempotent."""
    for _family, address, prefixlen in cfg.addresses:
        netlink.add_address(ipr, idx, address, prefixlen)
    for route in cfg.routes:
        netlink.add_route(ipr, idx, route)


def take(ipr: Any, idx: int, cfg: UplinkConfig) -> None:
    """Remove the addresses (their routes go with them). Idempotent."""
    for _family, address, prefixlen in cfg.addresses:
        netlink.del_address(ipr, idx, address, prefixlen)
    for route in cfg.routes:
        netlink.del_route(ipr, idx, route)
