"""The default switch's pure rules (policy/default_switch.py): its name, who gets it, its prefix."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nestor.errors import Conflict, InvalidInput
from nestor.policy import default_switch as rules

N = ipaddress.IPv4Network


def test_the_first_free_candidate_is_chosen() -> None:
    assert rules.choose_prefix([]) == N("192.168.100.0/24")
    taken = [N("192.168.100.0/24"), N("192.168.101.7/32")]  # a host route inside a candidate takes it too
    assert rules.choose_prefix(taken) == N("192.168.102.0/24")


def test_default_routes_do_not_count_but_wide_routes_do() -> None:
    assert rules.choose_prefix([N("0.0.0.0/0")]) == N("192.168.100.0/24")
    assert rules.choose_prefix([N("192.168.0.0/16")]) == N("10.100.0.0/24")  # a /16 covers every 192.168 candidate
    assert rules.choose_prefix([N("192.168.0.0/16"), N("10.0.0.0/8")]) == N("172.30.0.0/24")


def test_a_wider_candidate_overlapping_a_narrow_address_is_skipped() -> None:
    candidates = [N("10.0.0.0/16"), N("10.1.0.0/24")]
    assert rules.choose_prefix([N("10.0.200.0/30")], candidates) == N("10.1.0.0/24")


def test_no_free_candidate_is_a_conflict_with_a_hint() -> None:
    with pytest.raises(Conflict) as caught:
        rules.choose_prefix([N("0.0.0.0/1"), N("128.0.0.0/1")])
    assert "no free private prefix" in caught.value.message and "--switch" in (caught.value.hint or "")


def test_candidates_are_private_and_distinct() -> None:
    assert len(set(rules.CANDIDATES)) == len(rules.CANDIDATES)
    assert all(net.is_private and net.prefixlen == 24 for net in rules.CANDIDATES)


def test_gateway_is_the_first_address() -> None:
    assert rules.gateway(N("192.168.100.0/24")) == ipaddress.IPv4Interface("192.168.100.1/24")


def test_resolve_name_setting_and_override() -> None:
    assert rules.resolve(None, None) == "default"  # never set: the default name
    assert rules.resolve("lab-net", None) == "lab-net"  # recorded
    assert rules.resolve("none", None) is None  # the home turned it off
    assert rules.resolve("lab-net", "none") is None  # the process turned it off
    assert rules.resolve(None, "") == "default"  # set but empty: as unset
    with pytest.raises(InvalidInput) as caught:
        rules.resolve(None, "yes")
    assert rules.ENV in caught.value.message and "none" in (caught.value.hint or "")


def test_who_gets_the_default_switch() -> None:
    assert rules.wants_default((), no_network=False)
    assert not rules.wants_default(("sw",), no_network=False)
    assert not rules.wants_default((), no_network=True)
    with pytest.raises(InvalidInput):
        rules.wants_default(("sw",), no_network=True)


def test_the_service_refuses_no_network_with_switches_before_any_change(tmp_path: Path) -> None:
    """POST /v1/vms and `vm new` alike: no_network with switches is bad input, and nothing is made."""
    from nestor.service import Service, VMSpec
    from nestor.service.guest_types import GuestSpec

    with Service(tmp_path / "home") as s:
        with pytest.raises(InvalidInput) as caught:
            s.vm_new_request(VMSpec("web", switches=("lan",)), GuestSpec(no_network=True))
        assert "--no-network excludes --switch" in caught.value.message
        assert s.vm_list() == [] and s.switch_list() == []
