"""The default switch (Hyper-V's "Default Switch", libvirt's `default` network) as pure rules:
which name it has, whether a new VM gets it, and which private prefix it is made on.

A disk-image VM made without `--switch` and without `--no-network` gets one adapter on the home's
default switch, an internal switch with a NAT and DHCP + DNS, made on first use. Its prefix is the
first of CANDIDATES that overlaps no route and no address of the namespace nestor works in (and no
other NAT of the home): the host would otherwise send traffic meant for that network to the VMs,
or the reverse. Default routes (/0) overlap everything and are not counted: a more specific route
wins over them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from ..errors import Conflict, InvalidInput
from ..model import validate_name

NAME = "default"  # the switch's (and its NAT's) name until the home records another
NONE = "none"  # the setting (or NESTOR_DEFAULT_SWITCH) that turns the default network off
ENV = "NESTOR_DEFAULT_SWITCH"  # none: this process makes no default network (scripts, CI, the test suite)

# 192.168.100.0/24 .. 192.168.254.0/24 (libvirt's 192.168.122.0/24 among them: taken where libvirt
# runs, so skipped there), then 10.100.0.0/24 .. 10.100.255.0/24, then 172.30.0.0/24 .. 172.30.255.0/24.
CANDIDATES: tuple[ipaddress.IPv4Network, ...] = (
    *(ipaddress.IPv4Network(f"192.168.{i}.0/24") for i in range(100, 255)),
    *(ipaddress.IPv4Network(f"10.100.{i}.0/24") for i in range(256)),
    *(ipaddress.IPv4Network(f"172.30.{i}.0/24") for i in range(256)),
)


def resolve(setting: str | None, env: str | None) -> str | None:
    """The default switch's name for a new VM, or None (no default network).

    `setting` is the home's recorded value (None: never set), `env` the process's
    NESTOR_DEFAULT_SWITCH (None: unset); `none` in either turns the default network off."""
    if env is not None and env != "":
        if env != NONE:
            raise InvalidInput(f"{ENV}={env[:40]!r} is not understood",
                               hint=f"set {ENV}=none (no default network for new VMs) or unset it")
        return None
    if setting is None:
        return NAME
    if setting == NONE:
        return None
    return validate_name(setting, "switch")


def wants_default(switches: Sequence[str], no_network: bool) -> bool:
    """Does a new VM get the default switch? Only when it names no switch and did not refuse a network."""
    if no_network and switches:
        raise InvalidInput("--no-network excludes --switch", hint="give one of them")
    return not switches and not no_network


def choose_prefix(taken: Iterable[ipaddress.IPv4Network],
                  candidates: Iterable[ipaddress.IPv4Network] = CANDIDATES) -> ipaddress.IPv4Network:
    """The first candidate that overlaps none of `taken` (routes' destinations, addresses' networks,
    other NATs' prefixes); default routes in `taken` are ignored."""
    used = [net for net in taken if net.prefixlen > 0]
    for candidate in candidates:
        if not any(candidate.overlaps(net) for net in used):
            return candidate
    raise Conflict("no free private prefix for the default switch: every candidate overlaps a route or an address",
                   hint="make a switch and a NAT yourself (nestor switch new, nat new) and give vm new --switch NAME")


def gateway(prefix: ipaddress.IPv4Network) -> ipaddress.IPv4Interface:
    """The host's address on the switch: the prefix's first address (the VMs' gateway and DNS)."""
    return ipaddress.IPv4Interface(f"{next(prefix.hosts())}/{prefix.prefixlen}")
