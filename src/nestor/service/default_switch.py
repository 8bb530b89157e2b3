"""The default switch, made on first use (the rules: policy/default_switch.py).

An internal switch with the host's address on it, a NAT and dnsmasq's DHCP + DNS, made in the
network namespace nestor works in (`--netns`, like every switch) on a prefix that collides with
none of that namespace's routes and addresses. Its name is recorded in the home (the
host_settings table, as the nesting policy is): removed like any switch, it is made again, under
the same name, by the next `vm new` that needs it.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import Conflict
from ..net import host, netlink
from ..net.revert import Reverter
from ..policy import default_switch as rules
from ..state.hostpolicy import DEFAULT_SWITCH, PolicyRepo

if TYPE_CHECKING:
    from .core import Core


@dataclass(frozen=True)
class DefaultNetwork:
    switch: str | None  # the switch the new VM gets an adapter on; None: no network
    made: str | None = None  # what was made now (the line `vm new` prints), None: it existed
    warning: str | None = None  # why there is no network although one was wanted


def name(core: Core) -> str | None:
    """The home's default switch's name (None: the home turned it off); ignores the process's override."""
    value, changed = PolicyRepo(core.conn).get(DEFAULT_SWITCH, "")
    return rules.resolve(value if changed is not None else None, None)


def taken_networks(core: Core) -> list[ipaddress.IPv4Network]:
    """The namespace's IPv4 routes and addresses, read with netlink there, and the home's NATs' prefixes."""
    taken = [ipaddress.IPv4Network(nat.prefix) for nat in core.network.store.nats()]
    with netlink.session(core.netns) as ipr:
        for link in ipr.get_links():
            for family, address, prefixlen in netlink.addresses_of(ipr, int(link["index"])):
                if family == netlink.AF_INET:
                    taken.append(ipaddress.IPv4Interface(f"{address}/{prefixlen}").network)
        for route in netlink.routes_of(ipr):
            if route.family == netlink.AF_INET and route.dst:
                taken.append(ipaddress.IPv4Network(f"{route.dst}/{route.dst_len}", strict=False))
    return taken


def ensure(core: Core, revert: Reverter) -> DefaultNetwork:
    """The default switch for a new VM: the existing one, or made now (undone by `revert` if the
    VM is not made after all). Without CAP_NET_ADMIN no switch can be made: no network, a warning."""
    value, changed = PolicyRepo(core.conn).get(DEFAULT_SWITCH, "")
    switch = rules.resolve(value if changed is not None else None, os.environ.get(rules.ENV))
    if switch is None:
        return DefaultNetwork(None)
    net = core.network
    if net.store.find_switch(switch):
        return DefaultNetwork(switch)
    if not host.has_net_admin():
        return DefaultNetwork(None, warning=f"no network: making the default switch '{switch}' needs CAP_NET_ADMIN "
                                            "(run nestor as root), so the VM has no adapter; "
                                            "give --switch NAME or --no-network to say so")
    try:
        net.switch_new(switch, "internal")
    except Conflict:
        if net.store.find_switch(switch):  # another `vm new` made it meanwhile
            return DefaultNetwork(switch)
        raise
    with Reverter() as undo:  # the switch alone is not a default switch: undone now if the NAT fails
        undo.add(lambda: net.switch_remove(switch, force=True))
        prefix = rules.choose_prefix(taken_networks(core))
        gateway = rules.gateway(prefix)
        net.switch_set_ip(switch, str(gateway))
        net.nat_new(switch, switch, str(prefix), dhcp=True)
        undo.success()
    revert.add(lambda: net.switch_remove(switch, force=True))
    PolicyRepo(core.conn).set(DEFAULT_SWITCH, switch)
    where = f" in network namespace '{core.netns}'" if core.netns else ""
    return DefaultNetwork(switch, made=f"default switch '{switch}' made{where}: internal, NAT with DHCP and DNS on "
                                       f"{prefix} (gateway {gateway.ip}), a prefix no route or address here uses")
