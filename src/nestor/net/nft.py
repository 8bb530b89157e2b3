"""The MAC guard and NAT as nft tables: each rendered whole from the store, applied atomically.

One table per concern (``bridge nestor_guard``, ``inet nestor_nat``) per network namespace, so
each can be replaced or removed without touching anyone else's rules. A script first creates the
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


def render_guard(ports: Iterable[GuardPort], counters: Counters | None = None) -> str:
    """Seed R8 (MacAddressSpoofing off): a VM may only send as the MAC its adapter was given."""
    ports = sorted(ports, key=lambda p: p.tap)
    counters = counters or {}
    body: list[str] = []
    for port in ports:
        # Every adapter keeps its counter, also while spoofing is allowed: `adapter list` shows
        # what the guard dropped, and re-rendering carries the totals over.
        name = names.counter_name(port.tap)
        packets, nbytes = counters.get(name, (0, 0))
        body += [f"    counter {name} {{", f"        packets {packets} bytes {nbytes}", "    }"]
    body += [
        "    chain prerouting {",
        "        # Bridge prerouting sees every frame entering from a port, whether it is then",
        "        # forwarded to another VM or delivered to the host: one place guards both.",
        "        type filter hook prerouting priority filter; policy accept;",
    ]
    guarded = [p for p in ports if not p.mac_spoofing]
    for port in guarded:
        counter = names.counter_name(port.tap)
        body += [
            f"        # {port.label}: frames from its tap must carry the adapter's MAC as source, so",
            "        # the VM cannot impersonate another machine or flood the bridge's MAC table.",
            f'        iifname "{port.tap}" ether saddr != {port.mac} counter name "{counter}" drop',
            "        # ARP names its sender MAC again inside the payload; a forged one poisons the",
            "        # ARP caches of the host and the other VMs even with a correct frame source.",
            f'        iifname "{port.tap}" arp saddr ether != {port.mac} counter name "{counter}" drop',
        ]
    for port in ports:
        if port.mac_spoofing:
            body.append(f"        # {port.label}: MAC spoofing allowed (adapter set --mac-spoofing on): no rule.")
    body.append("    }")
    return _replace(names.GUARD_FAMILY, names.GUARD_TABLE, body if ports else [])


def render_nat(nats: Iterable[NatNet]) -> str:
    """Seed R9 (New-NetNat): VMs on an internal prefix reach the outside through the host's address."""
    nats = sorted(nats, key=lambda n: n.bridge)
    if not nats:
        return _replace(names.NAT_FAMILY, names.NAT_TABLE, [])
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
    ]
    for nat in nats:
        body += [
            f"        # nat {nat.name}: the VMs may open connections to the outside,",
            f'        iifname "{nat.bridge}" ip saddr {nat.prefix} accept',
            "        # the replies to those come back in,",
            f'        oifname "{nat.bridge}" ip daddr {nat.prefix} ct state established,related accept',
            "        # and nothing else does: the outside cannot open connections to the VMs.",
            f'        oifname "{nat.bridge}" ip daddr {nat.prefix} drop',
        ]
    body.append("    }")
    return _replace(names.NAT_FAMILY, names.NAT_TABLE, body)


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
