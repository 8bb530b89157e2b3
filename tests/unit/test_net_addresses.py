"""Pure validation of network input: MACs, ADDR/PREFIX, NAT prefixes, overlaps, DHCP ranges."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from nestor.errors import Conflict, InvalidInput
from nestor.net import addresses, names


@pytest.mark.parametrize(("text", "expected"), [
    ("52:54:00:12:34:56", "52:54:00:12:34:56"),
    ("52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef"),
    ("02-00-00-00-00-01", "02:00:00:00:00:01"),
])
def test_good_macs(text: str, expected: str) -> None:
    assert addresses.validate_mac(text) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("00:00:00:00:00:00", "all zero"),
    ("01:00:5e:00:00:01", "multicast"),
    ("ff:ff:ff:ff:ff:ff", "multicast"),
    ("52:54:00:12:34", "invalid"),
    ("52:54:00:12:34:5g", "invalid"),
    ("52:54:00-12:34:56", "invalid"),
    ("5254.0012.3456", "invalid"),
    ("", "invalid"),
    ("02:6e:73:00:00:01", "nestor's own bridges"),  # issue 18: a VM posing as its switch
    ("02:6E:73:AB:CD:EF", "nestor's own bridges"),
])
def test_bad_macs(text: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        addresses.validate_mac(text)
    assert why in err.value.message and err.value.hint


def test_random_macs_are_qemu_unicast() -> None:
    macs = {addresses.random_mac() for _ in range(200)}
    assert len(macs) > 190
    for mac in macs:
        assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
        assert addresses.validate_mac(mac) == mac


@pytest.mark.parametrize("text", ["10.0.0.1/24", "192.168.100.1/24", "10.1.2.2/30"])
def test_good_interface(text: str) -> None:
    assert str(addresses.parse_interface(text)) == text


@pytest.mark.parametrize(("text", "why"), [
    ("10.0.0.1", "lacks a /PREFIX"),
    ("10.0.0.0/24", "network address"),
    ("10.0.0.255/24", "broadcast address"),
    ("10.0.0.1/33", "invalid"),
    ("300.0.0.1/24", "invalid"),
    ("fd00::1/64", "not IPv4"),
    ("x/24", "invalid"),
])
def test_bad_interface(text: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        addresses.parse_interface(text)
    assert why in err.value.message


@pytest.mark.parametrize(("text", "why"), [
    ("192.168.100.1/24", "host bits"),
    ("192.168.100.0", "lacks"),
    ("192.168.100.0/31", "too small"),
    ("0.0.0.0/0", "too large"),
    ("0.0.0.0/1", "half of all"),  # issue 18
    ("128.0.0.0/1", "half of all"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/24", "multicast"),
    ("0.0.0.0/2", "covers 'this network'"),
    ("fd00::/64", "not IPv4"),
    ("banana/24", "invalid"),
])
def test_bad_prefix(text: str, why: str) -> None:
    with pytest.raises(InvalidInput) as err:
        addresses.parse_prefix(text)
    assert why in err.value.message


def test_host_bits_hint_names_the_network() -> None:
    with pytest.raises(InvalidInput) as err:
        addresses.parse_prefix("192.168.100.1/24")
    assert err.value.hint == "did you mean 192.168.100.0/24?"


def test_overlapping_prefixes() -> None:
    net = ipaddress.IPv4Network
    existing = [("a", net("192.168.100.0/24")), ("b", net("10.0.0.0/8"))]
    addresses.check_no_overlap("c", net("192.168.101.0/24"), existing)
    for prefix in ("192.168.100.128/25", "192.168.0.0/16", "10.20.0.0/16"):
        with pytest.raises(Conflict) as err:
            addresses.check_no_overlap("c", net(prefix), existing)
        assert "overlaps nat" in err.value.message


def test_dhcp_range_skips_the_gateway() -> None:
    net, ip = ipaddress.IPv4Network, ipaddress.IPv4Address
    assert addresses.dhcp_range(net("10.0.0.0/24"), ip("10.0.0.1")) == (ip("10.0.0.2"), ip("10.0.0.254"))
    assert addresses.dhcp_range(net("10.0.0.0/24"), ip("10.0.0.254")) == (ip("10.0.0.1"), ip("10.0.0.253"))
    assert addresses.dhcp_range(net("10.0.0.0/30"), ip("10.0.0.1")) == (ip("10.0.0.2"), ip("10.0.0.2"))


def test_kernel_names_fit_ifnamsiz_and_carry_the_home() -> None:
    tag = names.home_tag(Path("/srv/home-a"))
    assert len(tag) == 5 and tag != names.home_tag(Path("/srv/home-b"))
    assert tag == names.home_tag(Path("/srv/./home-a"))  # the real path, not its spelling
    assert names.bridge_name(tag, 1) == f"nsb{tag}-1" and names.tap_name(tag, 12) == f"nst{tag}-12"
    assert len(names.tap_name(tag, 999_999)) <= 15
    with pytest.raises(ValueError):
        names.tap_name(tag, 1_000_000)
    assert names.guard_table(tag) == f"nestor_guard_{tag}" and names.nat_table(tag) == f"nestor_nat_{tag}"


@pytest.mark.parametrize("text", [
    "10.0.0.1/0", "10.0.0.1/1", "127.0.0.2/8", "127.1.2.3/24", "224.0.0.5/24", "239.1.1.1/16",
    "240.0.0.1/24", "250.1.1.1/8", "169.254.1.1/16", "169.254.7.1/24", "0.1.2.3/24", "126.0.0.1/7",
    "168.0.0.1/6",
])
def test_host_address_refuses_special_networks(text: str) -> None:
    iface = addresses.parse_interface(text)
    with pytest.raises(InvalidInput) as err:
        addresses.check_host_address(iface)
    assert text.split("/")[0] in err.value.message and err.value.hint


@pytest.mark.parametrize("text", ["10.1.2.1/24", "192.168.100.1/24", "172.16.0.1/12", "100.64.0.1/10", "8.8.8.1/24"])
def test_host_address_accepts_ordinary_networks(text: str) -> None:
    addresses.check_host_address(addresses.parse_interface(text))


def test_clash_names_the_route_or_address() -> None:
    taken = [("route 10.9.0.0/16 via 10.0.0.254 dev eth1", ipaddress.IPv4Network("10.9.0.0/16")),
             ("address 172.20.0.5/24 on eth0", ipaddress.IPv4Network("172.20.0.0/24"))]
    with pytest.raises(Conflict) as err:
        addresses.check_no_clash(addresses.parse_interface("10.9.8.1/24"), taken, "the root network namespace")
    assert "route 10.9.0.0/16 via 10.0.0.254 dev eth1" in err.value.message and err.value.hint
    with pytest.raises(Conflict) as err:
        addresses.check_no_clash(addresses.parse_interface("172.20.0.1/16"), taken, "here")
    assert "address 172.20.0.5/24 on eth0" in err.value.message
    addresses.check_no_clash(addresses.parse_interface("192.168.5.1/24"), taken, "here")


def test_bridge_macs_are_refused_for_adapters() -> None:
    for _ in range(20):
        with pytest.raises(InvalidInput):
            addresses.validate_mac(addresses.random_mac(addresses.BRIDGE_OUI))
    assert addresses.validate_mac("02:6e:74:00:00:01") == "02:6e:74:00:00:01"  # a neighbour prefix is fine


def test_nat_prefix_must_lie_inside_its_switch_subnet() -> None:
    """Issue 18: a NAT prefix larger than the switch's subnet masquerades addresses not behind it."""
    net, iface = ipaddress.IPv4Network, ipaddress.IPv4Interface
    addresses.check_nat_in_switch(net("192.168.100.0/24"), "sw", iface("192.168.100.1/24"))
    addresses.check_nat_in_switch(net("192.168.100.0/25"), "sw", iface("192.168.100.1/24"))
    for prefix in ("192.168.0.0/16", "192.168.100.0/23", "128.0.0.0/1"):
        with pytest.raises(InvalidInput) as err:
            addresses.check_nat_in_switch(net(prefix), "sw", iface("192.168.100.1/24"))
        assert "larger than switch 'sw' subnet 192.168.100.0/24" in err.value.message
        assert err.value.hint == "use 192.168.100.0/24 or a prefix inside it"
