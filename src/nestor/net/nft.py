"""The MAC guard and NAT as nft tables: each rendered whole from the store, applied atomically.

One table per concern and home (``bridge nestor_guard_<tag>``, ``inet nestor_nat_<tag>``) per
network namespace, so each can be replaced or removed without touching anyone else's rules. A script first creates the
table (a no-op if it exists), deletes it, and defines it again: ``nft -f -`` runs all of that in
one transaction, so there is never a moment without the guard. The comments in the rendered
text say why each rule exists (nft drops them when it parses; the golden files keep them).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..errors import HostError
from . import names
from .run import run

Counters = Mapping[str, tuple[int, int]]  # counter name -> (packets, bytes)


@dataclass(frozen=True)
class GuardPort:
    """One adapter as the guard sees it."""

    tap: str
    mac: str
    mac_spoofing: bool
    label: str  # "vm/adapter", for the comment
    router_guard: bool = True
    dhcp_guard: bool = True


@dataclass(frozen=True)
class NatNet:
    """One NAT as the NAT table sees it."""

    name: str
    bridge: str
    prefix: ipaddress.IPv4Network


def _replace(family: str, table: str, body: Sequence[str]) -> str:
    lines = [f"table {family} {table} {{}}", f"delete table {family} {table}"]
    if body:
        lines += [f"table {family} {table} {{", *body, "}"]
    return "\n".join(lines) + "\n"


def _hex_mac(mac: str) -> str:
    return "0x" + mac.replace(":", "")


def _port_rules(port: GuardPort) -> list[str]:
    """The rules of one adapter, each with its counter and the reason it exists."""
    tap = port.tap

    def rule(kind: str, match: str) -> str:
        return f'        iifname "{tap}" {match} counter name "{names.counter_name(kind, tap)}" drop'

    lines: list[str] = []
    if port.mac_spoofing:
        lines.append(f"        # {port.label}: MAC spoofing allowed (adapter set --mac-spoofing on): no MAC rules.")
    else:
        lines += [
            f"        # {port.label}: VLAN tags hide the ARP and IPv6 headers from the rules below;",
            "        # an untagged access port (Hyper-V's default) has no use for them.",
            rule("vlan", "ether type { 8021q, 8021ad }"),
            "        # Frames from its tap must carry the adapter's MAC as source, so the VM cannot",
            "        # impersonate another machine or flood the bridge's MAC table.",
            rule("mac", f"ether saddr != {port.mac}"),
            "        # ARP names its sender MAC again inside the payload; a forged one poisons the",
            "        # ARP caches of the host and the other VMs even with a correct frame source.",
            rule("arp", f"arp saddr ether != {port.mac}"),
            "        # IPv6 neighbour discovery does the same in its link-layer address option (the",
            "        # first option, 24 bytes into the message: source for NS, target for NA) ...",
            rule("nd", f"icmpv6 type nd-neighbor-solicit @th,192,8 1 @th,208,48 != {_hex_mac(port.mac)}"),
            rule("nd", f"icmpv6 type nd-neighbor-advert @th,192,8 2 @th,208,48 != {_hex_mac(port.mac)}"),
            "        # ... and a message with more than that one option could hide a second,",
            "        # forged one behind it: 24 bytes + one 8-byte option is all NS/NA need.",
            rule("nd", "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } ip6 length > 32"),
            "        # dnsmasq keys leases on the BOOTP client hardware address (chaddr, 28 bytes into",
            "        # the BOOTP message, after the 8-byte UDP header): a request naming another MAC",
            "        # would take that VM's lease, and `vm ssh` would land on this one. Requests must",
            "        # be Ethernet (htype 1, hlen 6) and name the adapter's own MAC, and unfragmented:",
            "        # a first fragment could end before chaddr, where the rules cannot look.",
            rule("mac", "ip frag-off & 0x3fff != 0 udp dport 67"),
            rule("mac", "udp dport 67 @th,72,16 != 0x0106"),
            rule("mac", f"udp dport 67 @th,288,48 != {_hex_mac(port.mac)}"),
        ]
    if port.router_guard:
        lines += [
            f"        # {port.label}: router guard (adapter set --router-guard): a VM is no router.",
            "        # A router advertisement would make it the default gateway of the host and",
            "        # every VM on the switch; a redirect would divert their traffic through it.",
            rule("router", "icmpv6 type { nd-router-advert, nd-redirect }"),
            rule("router", "icmp type redirect"),
        ]
    if port.dhcp_guard:
        lines += [
            f"        # {port.label}: DHCP guard (adapter set --dhcp-guard): a VM is no DHCP server.",
            "        # Its offers and acks would hand out rogue addresses, gateways and DNS servers to",
            "        # the other VMs. Clients accept them from any source port, so the guard looks at",
            "        # where they go: nothing to the client ports (68, 546) ...",
            rule("dhcp", "udp dport { 68, 546 }"),
            "        # ... no BOOTP reply (op 2) or DHCPv6 server message (advertise 2, reply 7,",
            "        # reconfigure 10, relay-reply 13) to the server ports either (relays listen there) ...",
            rule("dhcp", "udp dport 67 @th,64,8 != 1"),
            rule("dhcp", "udp dport 547 @th,64,8 { 2, 7, 10, 13 }"),
            "        # ... and nothing from the server ports, whatever it is sent to.",
            rule("dhcp", "udp sport { 67, 547 }"),
        ]
    return lines


def render_guard(tag: str, ports: Iterable[GuardPort], counters: Counters | None = None) -> str:
    """Seed R8 (MacAddressSpoofing off) plus Hyper-V's router and DHCP guards, per adapter.

    With spoofing off a VM may only send as the MAC its adapter was given (in the frame, in ARP
    and in neighbour discovery); the router and DHCP guards are independent of spoofing.
    """
    ports = sorted(ports, key=lambda p: p.tap)
    counters = counters or {}
    body: list[str] = []
    for port in ports:
        # Every adapter keeps all its counters, also while a guard is off: `adapter list` shows
        # what was dropped, and re-rendering carries the totals over.
        for kind in names.GUARD_KINDS:
            name = names.counter_name(kind, port.tap)
            packets, nbytes = counters.get(name, (0, 0))
            body += [f"    counter {name} {{", f"        packets {packets} bytes {nbytes}", "    }"]
    body += [
        "    chain prerouting {",
        "        # Bridge prerouting sees every frame entering from a port, whether it is then",
        "        # forwarded to another VM or delivered to the host: one place guards both.",
        "        type filter hook prerouting priority filter; policy accept;",
    ]
    for port in ports:
        body += _port_rules(port)
    body.append("    }")
    return _replace(names.GUARD_FAMILY, names.guard_table(tag), body if ports else [])


def render_nat(tag: str, nats: Iterable[NatNet], isolated: Iterable[str] = ()) -> str:
    """Seed R9 (New-NetNat): VMs on an internal prefix reach the outside through the host's address.

    ``isolated`` are this home's internal and private bridges in the namespace: nothing is
    routed into them but the replies to their NAT's own connections.
    """
    nats = sorted(nats, key=lambda n: n.bridge)
    table = names.nat_table(tag)
    if not nats:
        return _replace(names.NAT_FAMILY, table, [])
    bridges = sorted(set(isolated) | {n.bridge for n in nats})
    body = [
        "    chain postrouting {",
        "        type nat hook postrouting priority srcnat; policy accept;",
    ]
    for nat in nats:
        body += [
            f"        # nat {nat.name}: traffic from {nat.prefix} leaving through any interface but its",
            "        # own switch takes that interface's address, so replies find their way back.",
            f'        ip saddr {nat.prefix} ip daddr != {nat.prefix} oifname != "{nat.bridge}" masquerade',
        ]
    body += [
        "    }",
        "    chain forward {",
        "        # Our own accept decisions; another table's drop still wins (nft evaluates every",
        "        # base chain on the hook), so this never opens more than the host allows.",
        "        type filter hook forward priority filter; policy accept;",
        "        # Two VMs of one switch talk bridged, not routed; with br_netfilter loaded",
        "        # (bridge-nf-call-iptables=1) their frames still meet this hook, the bridge as both",
        "        # interfaces: that is the switch, not forwarding through the host.",
    ]
    for bridge in bridges:
        body += [f"        # {bridge}: VM to VM on that switch.", f'        iifname "{bridge}" oifname "{bridge}" accept']
    for nat in nats:
        body += [
            f"        # nat {nat.name}: the replies to the VMs' own connections come back in.",
            f'        oifname "{nat.bridge}" ip daddr {nat.prefix} ct state established,related accept',
        ]
    body += [
        "        # Forwarding is on for the NATs' sake; it must not route anything else into a",
        "        # switch of ours: not from the outside, not from another switch, not IPv6.",
        "        oifname { " + ", ".join(f'"{b}"' for b in bridges) + " } drop",
    ]
    for nat in nats:
        body += [
            f"        # nat {nat.name}: its VMs may open connections to the outside.",
            f'        iifname "{nat.bridge}" ip saddr {nat.prefix} accept',
        ]
    body += [
        "        # Nothing else leaves a switch of ours routed: not a forged source, not IPv6,",
        "        # not a switch without NAT.",
        "        iifname { " + ", ".join(f'"{b}"' for b in bridges) + " } drop",
    ]
    body.append("    }")
    return _replace(names.NAT_FAMILY, table, body)


def apply(netns: str | None, script: str) -> None:
    """One atomic nft transaction (``nft -f -``), inside ``netns``."""
    try:
        run(["nft", "-f", "-"], netns, stdin=script)
    except HostError as exc:
        raise HostError(exc.message.replace("nft failed", "nft refused the rules"),
                        hint="is nf_tables available? (modprobe nf_tables)") from exc


def read_counters(netns: str | None, family: str, table: str) -> dict[str, tuple[int, int]]:
    """The named counters of a table, {} if the table does not exist."""
    try:
        out = run(["nft", "-j", "list", "counters", "table", family, table], netns)
    except HostError:
        return {}
    return parse_counters(out)


def parse_counters(text: str) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    for item in json.loads(text).get("nftables", []):
        counter = item.get("counter")
        if counter:
            found[str(counter["name"])] = (int(counter["packets"]), int(counter["bytes"]))
    return found


def tables(netns: str | None) -> list[tuple[str, str]]:
    """(family, name) of every nft table in the namespace ([] if nft cannot list them)."""
    try:
        out = run(["nft", "-j", "list", "tables"], netns)
    except HostError:
        return []
    return parse_tables(out)


def parse_tables(text: str) -> list[tuple[str, str]]:
    found = []
    for item in json.loads(text).get("nftables", []):
        table = item.get("table")
        if table:
            found.append((str(table["family"]), str(table["name"])))
    return found
