"""The nft tables rendered whole, against golden files (regenerate with NESTOR_REGOLD=1)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from nestor.net import names, nft

GOLDEN = Path(__file__).parent / "golden"
TAG = "ab12c"

PORTS = [
    nft.GuardPort(tap="nstab12c-2", mac="52:54:00:aa:bb:02", mac_spoofing=True, label="web/net1"),
    nft.GuardPort(tap="nstab12c-1", mac="52:54:00:aa:bb:01", mac_spoofing=False, label="web/net0"),
    nft.GuardPort(tap="nstab12c-3", mac="52:54:00:aa:bb:03", mac_spoofing=False, label="router/net0",
                  router_guard=False, dhcp_guard=False),
]
NATS = [
    nft.NatNet(name="outside", bridge="nsbab12c-1", prefix=ipaddress.IPv4Network("192.168.100.0/24")),
    nft.NatNet(name="lab", bridge="nsbab12c-3", prefix=ipaddress.IPv4Network("10.77.0.0/16")),
]
ISOLATED = ["nsbab12c-1", "nsbab12c-2", "nsbab12c-3"]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NESTOR_REGOLD"):
        path.write_text(text)
    assert text == path.read_text()


def rules_of(text: str, tap: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if f'iifname "{tap}"' in line]


def test_guard_three_adapters() -> None:
    golden("nft_guard.txt", nft.render_guard(TAG, PORTS, {"mac_nstab12c-1": (7, 420)}))


def test_guard_spoofing_off_checks_frame_arp_and_nd() -> None:
    rules = rules_of(nft.render_guard(TAG, PORTS), "nstab12c-1")
    assert 'iifname "nstab12c-1" ether saddr != 52:54:00:aa:bb:01 counter name "mac_nstab12c-1" drop' in rules
    assert 'iifname "nstab12c-1" arp saddr ether != 52:54:00:aa:bb:01 counter name "arp_nstab12c-1" drop' in rules
    nd = [r for r in rules if "arp_" not in r and "nd-neighbor" in r]
    assert any("nd-neighbor-solicit @th,192,8 1 @th,208,48 != 0x525400aabb01" in r for r in nd)
    assert any("nd-neighbor-advert @th,192,8 2 @th,208,48 != 0x525400aabb01" in r for r in nd)
    assert any("ip6 length > 32" in r for r in nd)
    assert any("8021q" in r and "vlan_nstab12c-1" in r for r in rules)


def test_guard_spoofing_on_keeps_router_and_dhcp_guards() -> None:
    rules = rules_of(nft.render_guard(TAG, PORTS), "nstab12c-2")
    assert not [r for r in rules if "saddr" in r or "nd-neighbor" in r or "8021q" in r]
    assert 'iifname "nstab12c-2" icmpv6 type { nd-router-advert, nd-redirect } counter name "router_nstab12c-2" drop' \
        in rules
    assert 'iifname "nstab12c-2" icmp type redirect counter name "router_nstab12c-2" drop' in rules
    assert 'iifname "nstab12c-2" udp sport { 67, 547 } counter name "dhcp_nstab12c-2" drop' in rules
    assert not [r for r in rules if "@th,288,48" in r]  # spoofing on: chaddr is free too


def test_dhcp_guard_drops_replies_whatever_their_source_port() -> None:
    """A rogue offer from port 6767 to port 68 is as good as one from 67 to a client (issue 18)."""
    rules = rules_of(nft.render_guard(TAG, PORTS), "nstab12c-2")
    assert 'iifname "nstab12c-2" udp dport { 68, 546 } counter name "dhcp_nstab12c-2" drop' in rules
    assert 'iifname "nstab12c-2" udp dport 67 @th,64,8 != 1 counter name "dhcp_nstab12c-2" drop' in rules
    assert 'iifname "nstab12c-2" udp dport 547 @th,64,8 { 2, 7, 10, 13 } counter name "dhcp_nstab12c-2" drop' in rules
    assert not [r for r in rules_of(nft.render_guard(TAG, PORTS), "nstab12c-3") if "dhcp_" in r]  # guard off


def test_spoofing_off_binds_the_bootp_client_address_to_the_mac() -> None:
    """dnsmasq keys leases on chaddr: with spoofing off a request must name the adapter's MAC."""
    rules = rules_of(nft.render_guard(TAG, PORTS), "nstab12c-1")
    assert 'iifname "nstab12c-1" udp dport 67 @th,288,48 != 0x525400aabb01 counter name "mac_nstab12c-1" drop' in rules
    assert 'iifname "nstab12c-1" udp dport 67 @th,72,16 != 0x0106 counter name "mac_nstab12c-1" drop' in rules
    assert 'iifname "nstab12c-1" ip frag-off & 0x3fff != 0 udp dport 67 counter name "mac_nstab12c-1" drop' in rules
    # the router guard's port 3 has no DHCP guard but still its MAC binding
    assert any("@th,288,48 != 0x525400aabb03" in r for r in rules_of(nft.render_guard(TAG, PORTS), "nstab12c-3"))


def test_guards_off_mean_no_rule_but_counters_stay() -> None:
    text = nft.render_guard(TAG, PORTS)
    rules = rules_of(text, "nstab12c-3")
    assert rules and not [r for r in rules if "router_" in r or "dhcp_" in r]
    for kind in names.GUARD_KINDS:
        assert f"counter {kind}_nstab12c-3 {{" in text


def test_guard_atomic_replace_and_empty_removes_table() -> None:
    text = nft.render_guard(TAG, PORTS)
    table = "bridge nestor_guard_ab12c"
    assert text.startswith(f"table {table} {{}}\ndelete table {table}\ntable {table} {{\n")
    assert nft.render_guard(TAG, []) == f"table {table} {{}}\ndelete table {table}\n"


def test_two_homes_render_two_tables() -> None:
    assert "nestor_guard_ab12c" in nft.render_guard(TAG, PORTS)
    assert "nestor_guard_ab12c" not in nft.render_guard("ffff0", PORTS)
    assert "inet nestor_nat_ffff0 " in nft.render_nat("ffff0", NATS)


def test_nat_table() -> None:
    golden("nft_nat.txt", nft.render_nat(TAG, NATS, ISOLATED))
    assert nft.render_nat(TAG, []) == "table inet nestor_nat_ab12c {}\ndelete table inet nestor_nat_ab12c\n"


def test_nat_forward_passes_only_nat_out_and_replies() -> None:
    lines = [line.strip() for line in nft.render_nat(TAG, NATS, ISOLATED).splitlines()]
    forward = lines[lines.index("chain forward {"):]
    rules = [r for r in forward if r.endswith(("accept", "drop")) and "policy" not in r]
    drop = 'oifname { "nsbab12c-1", "nsbab12c-2", "nsbab12c-3" } drop'
    assert drop in rules
    before, after = rules[:rules.index(drop)], rules[rules.index(drop) + 1:]
    # first, each switch's own traffic (VM to VM, bridged; seen here when br_netfilter is loaded)
    assert before[:3] == [f'iifname "nsbab12c-{i}" oifname "nsbab12c-{i}" accept' for i in (1, 2, 3)]
    assert all("ct state established,related accept" in r for r in before[3:]) and len(before) == 5
    assert after == ['iifname "nsbab12c-1" ip saddr 192.168.100.0/24 accept',
                     'iifname "nsbab12c-3" ip saddr 10.77.0.0/16 accept',
                     'iifname { "nsbab12c-1", "nsbab12c-2", "nsbab12c-3" } drop']


def test_every_rule_has_a_reason() -> None:
    for text in (nft.render_guard(TAG, PORTS), nft.render_nat(TAG, NATS, ISOLATED)):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.strip().endswith(("drop", "accept", "masquerade")) and "policy" not in line:
                j = i - 1
                while lines[j].strip().startswith("iifname") and lines[j].strip().endswith("drop"):
                    j -= 1  # a group of rules under one comment
                assert lines[j].strip().startswith("#"), line


def test_every_guard_rule_counts() -> None:
    for line in nft.render_guard(TAG, PORTS).splitlines():
        if line.strip().endswith("drop"):
            assert 'counter name "' in line, line


def test_parse_counters_and_tables() -> None:
    text = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"counter": {"family": "bridge", "name": "mac_nstab12c-1", "table": "nestor_guard_ab12c", "handle": 2,
                     "packets": 5, "bytes": 300}},
    ]})
    assert nft.parse_counters(text) == {"mac_nstab12c-1": (5, 300)}
    tables = json.dumps({"nftables": [{"metainfo": {}}, {"table": {"family": "inet", "name": "nestor_nat_ab12c"}}]})
    assert nft.parse_tables(tables) == [("inet", "nestor_nat_ab12c")]
