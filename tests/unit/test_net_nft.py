"""The nft tables rendered whole, against golden files (regenerate with NESTOR_REGOLD=1)."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from nestor.net import nft

GOLDEN = Path(__file__).parent / "golden"

PORTS = [
    nft.GuardPort(tap="nstap2", mac="52:54:00:aa:bb:02", mac_spoofing=True, label="web/net1"),
    nft.GuardPort(tap="nstap1", mac="52:54:00:aa:bb:01", mac_spoofing=False, label="web/net0"),
]
NATS = [
    nft.NatNet(name="outside", bridge="nsbr1", prefix=ipaddress.IPv4Network("192.168.100.0/24")),
    nft.NatNet(name="lab", bridge="nsbr3", prefix=ipaddress.IPv4Network("10.77.0.0/16")),
]


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("NESTOR_REGOLD"):
        path.write_text(text)
    assert text == path.read_text()


def test_guard_two_adapters_one_spoofing() -> None:
    golden("nft_guard.txt", nft.render_guard(PORTS, {"spoofed_nstap1": (7, 420)}))


def test_guard_rules_only_for_guarded_ports() -> None:
    text = nft.render_guard(PORTS)
    assert 'iifname "nstap1" ether saddr != 52:54:00:aa:bb:01 counter name "spoofed_nstap1" drop' in text
    assert 'iifname "nstap1" arp saddr ether != 52:54:00:aa:bb:01' in text
    assert 'iifname "nstap2"' not in text  # spoofing on: no rule ...
    assert "counter spoofed_nstap2 {" in text  # ... but the counter stays
    assert "packets 0 bytes 0" in text


def test_guard_atomic_replace_and_empty_removes_table() -> None:
    text = nft.render_guard(PORTS)
    assert text.startswith("table bridge nestor_guard {}\ndelete table bridge nestor_guard\ntable bridge nestor_guard {\n")
    assert nft.render_guard([]) == "table bridge nestor_guard {}\ndelete table bridge nestor_guard\n"


def test_nat_table() -> None:
    golden("nft_nat.txt", nft.render_nat(NATS))
    assert nft.render_nat([]) == "table inet nestor_nat {}\ndelete table inet nestor_nat\n"


def test_every_rule_has_a_reason() -> None:
    for text in (nft.render_guard(PORTS), nft.render_nat(NATS)):
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.strip().endswith(("drop", "accept", "masquerade")) and "policy" not in line:
                assert lines[i - 1].strip().startswith("#"), line


def test_parse_counters() -> None:
    text = json.dumps({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"counter": {"family": "bridge", "name": "spoofed_nstap1", "table": "nestor_guard", "handle": 2,
                     "packets": 5, "bytes": 300}},
    ]})
    assert nft.parse_counters(text) == {"spoofed_nstap1": (5, 300)}
