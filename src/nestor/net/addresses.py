"""Pure validation of network input: MAC addresses, ADDR/PREFIX, NAT prefixes, overlaps."""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable

from ..errors import Conflict, InvalidInput
from .grammar import MAX_NAT_PREFIXLEN, MIN_HOST_PREFIXLEN, RESERVED

MAC_RE = re.compile(r"[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}")
# The validators below accept exactly what net/patterns.py's MAC, CIDR and NAT_PREFIX match (the
# OpenAPI document's patterns, built by net/grammar.py; tests/unit/test_net_grammar.py).
_SYNTAX = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}/(?:[0-9]|[1-9][0-9])")  # ADDR/LEN as nestor takes it: no netmask form
QEMU_OUI = "52:54:00"  # QEMU's locally administered prefix
BRIDGE_OUI = "02:6e:73"  # locally administered, "ns": nestor's bridges' own MACs, never an adapter's


def validate_mac(text: str) -> str:
    """A well-formed unicast MAC that is not all zero, normalised to lower case with ':'."""
    mac = text.lower()
    if not MAC_RE.fullmatch(mac):
        raise InvalidInput(f"invalid MAC address '{text}'", hint="use six hex bytes, e.g. 52:54:00:12:34:56")
    mac = mac.replace("-", ":")
    octets = [int(part, 16) for part in mac.split(":")]
    if not any(octets):
        raise InvalidInput(f"invalid MAC address '{text}': all zero", hint="e.g. 52:54:00:12:34:56")
    if octets[0] & 1:
        raise InvalidInput(
            f"invalid MAC address '{text}': it is a multicast address (lowest bit of the first byte set)",
            hint="a NIC needs a unicast MAC, e.g. 52:54:00:12:34:56",
        )
    if mac.startswith(BRIDGE_OUI + ":"):
        raise InvalidInput(
            f"invalid MAC address '{text}': {BRIDGE_OUI}:… is the prefix of nestor's own bridges",
            hint="a VM posing as its switch would take the host's traffic; omit --mac for a generated one",
        )
    return mac


def random_mac(oui: str = QEMU_OUI) -> str:
    return oui + "".join(f":{b:02x}" for b in secrets.token_bytes(3))


def parse_interface(text: str) -> ipaddress.IPv4Interface:
    """ADDR/PREFIX for a switch's host address: IPv4, with a prefix, a host (not the network)."""
    hint = "use ADDR/PREFIX, e.g. 192.168.100.1/24"
    if "/" not in text:
        raise InvalidInput(f"address '{text}' lacks a /PREFIX", hint=hint)
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidInput(f"invalid address '{text}'", hint=hint) from None
    if not isinstance(iface, ipaddress.IPv4Interface):
        raise InvalidInput(f"address '{text}' is not IPv4", hint=hint)
    if not _SYNTAX.fullmatch(text):
        raise InvalidInput(f"invalid address '{text}'", hint=hint)
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        raise InvalidInput(
            f"address '{text}' is the {'network' if iface.ip == net.network_address else 'broadcast'} "
            f"address of {net}",
            hint=f"use a host address, e.g. {next(net.hosts())}/{net.prefixlen}",
        )
    return iface


def parse_prefix(text: str) -> ipaddress.IPv4Network:
    """A NAT's internal prefix (CIDR): IPv4, no host bits set, room for the switch and a VM."""
    hint = "use a network in CIDR form, e.g. 192.168.100.0/24"
    if "/" not in text:
        raise InvalidInput(f"prefix '{text}' lacks a /LENGTH", hint=hint)
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidInput(f"invalid prefix '{text}'", hint=hint) from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidInput(f"prefix '{text}' is not IPv4", hint=hint)
    if not _SYNTAX.fullmatch(text):
        raise InvalidInput(f"invalid prefix '{text}'", hint=hint)
    if str(net) != text:
        raise InvalidInput(f"prefix '{text}' has host bits set", hint=f"did you mean {net}?")
    hint = f"use a length between /{MIN_HOST_PREFIXLEN} and /{MAX_NAT_PREFIXLEN}, e.g. /24"
    if net.prefixlen > MAX_NAT_PREFIXLEN:
        raise InvalidInput(f"prefix '{text}' is too small for a NAT", hint=hint)
    if net.prefixlen < MIN_HOST_PREFIXLEN:
        raise InvalidInput(f"prefix '{text}' is too large for a NAT: it would masquerade "
                           f"{'every' if net.prefixlen == 0 else 'half of all'} IPv4 address(es)", hint=hint)
    for reserved, what in RESERVED:
        if net.overlaps(reserved):
            raise InvalidInput(f"prefix '{text}' {'is in' if net.subnet_of(reserved) else 'covers'} {what}",
                               hint="use a private network, e.g. 192.168.100.0/24")
    return net


def check_nat_in_switch(prefix: ipaddress.IPv4Network, switch: str, address: ipaddress.IPv4Interface) -> None:
    """A NAT masquerades its prefix as coming from its switch: a prefix larger than the switch's
    own subnet would claim addresses (other hosts, other switches) that are not behind it."""
    if not prefix.subnet_of(address.network):
        raise InvalidInput(
            f"prefix {prefix} is larger than switch '{switch}' subnet {address.network} (address {address})",
            hint=f"use {address.network} or a prefix inside it",
        )


def check_no_overlap(name: str, prefix: ipaddress.IPv4Network,
                     existing: Iterable[tuple[str, ipaddress.IPv4Network]]) -> None:
    """Two NATs whose prefixes overlap would make routing and masquerade ambiguous."""
    for other, other_prefix in existing:
        if prefix.overlaps(other_prefix):
            raise Conflict(
                f"nat '{name}' prefix {prefix} overlaps nat '{other}' ({other_prefix})",
                hint="choose a prefix that overlaps no other NAT (nestor nat list)",
            )


def dhcp_range(prefix: ipaddress.IPv4Network,
               gateway: ipaddress.IPv4Address) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    """The longest run of host addresses on one side of the gateway (the switch's address)."""
    first, last = prefix.network_address + 1, prefix.broadcast_address - 1
    below = int(gateway) - int(first)
    above = int(last) - int(gateway)
    if max(below, above) <= 0:
        raise InvalidInput(f"prefix {prefix} leaves no address to lease besides {gateway}",
                           hint="use a larger prefix, e.g. /24")
    return (gateway + 1, last) if above >= below else (first, gateway - 1)




def host_address(text: str) -> ipaddress.IPv4Interface:
    """A switch's ADDR/PREFIX, every rule: what the OpenAPI document's CIDR pattern admits."""
    iface = parse_interface(text)
    check_host_address(iface)
    return iface


def check_host_address(iface: ipaddress.IPv4Interface) -> None:
    """A host address on a switch must not claim a special network or half the Internet."""
    if iface.network.prefixlen < MIN_HOST_PREFIXLEN:
        raise InvalidInput(
            f"address {iface} would route {'every' if iface.network.prefixlen == 0 else 'half of all'} "
            "IPv4 address(es) to the switch, taking the host's traffic with it",
            hint="use a private network, e.g. 192.168.100.1/24",
        )
    for reserved, what in RESERVED:
        if iface.network.overlaps(reserved):
            inside = iface.ip in reserved
            raise InvalidInput(
                f"address {iface} {'is in' if inside else 'covers'} {what}",
                hint="use a private network, e.g. 192.168.100.1/24",
            )


def check_no_clash(iface: ipaddress.IPv4Interface, taken: Iterable[tuple[str, ipaddress.IPv4Network]],
                   where: str) -> None:
    """The switch's network must not overlap a route or address the namespace already has:
    the host would send traffic meant for that network to the VMs (or the reverse)."""
    for what, net in taken:
        if iface.network.overlaps(net):
            raise Conflict(f"address {iface} overlaps {what} in {where}",
                           hint="choose a network that overlaps no route or address (ip route; ip addr)")
