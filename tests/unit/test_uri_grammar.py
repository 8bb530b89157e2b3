"""The host-URI pattern in the API document (remote/uri.GRAMMAR) matches exactly what
remote/uri.validate accepts, bracketed IPv6 hosts included."""

from __future__ import annotations

import ipaddress
import re

import pytest

from nestor.errors import NestorError
from nestor.remote import uri

GRAMMAR = re.compile(uri.GRAMMAR)


def accepted(text: str) -> bool:
    try:
        return uri.validate(text) == text
    except NestorError:
        return False


def _ipv6_shapes() -> list[str]:
    """Every shape of an IPv6 literal: LEFT groups, '::' or ':', RIGHT groups, an IPv4 tail or not."""
    shapes = []
    for left in range(9):
        for right in range(9):
            for tail in ([], ["10.0.0.1"]):
                for sep in ("::", ":"):
                    if sep == ":" and not (left and right):
                        continue
                    shapes.append(":".join(["fd00"] * left) + sep + ":".join(["2"] * right + tail))
    return shapes


@pytest.mark.parametrize("host", _ipv6_shapes())
def test_pattern_and_validator_agree_on_ipv6_hosts(host: str) -> None:
    try:
        ipaddress.IPv6Address(host)
        valid = True
    except ValueError:
        valid = False
    text = f"qemu+ssh://root@[{host}]:22/system"
    assert bool(GRAMMAR.fullmatch(text)) == accepted(text) == valid


@pytest.mark.parametrize("text", [
    "qemu+ssh://root@host-a/system", "qemu+tls://host-b.example/system?mode=direct", "qemu:///system",
    "test:///default", "qemu+ssh://admin@[fd00::2]:2222/system?no_tty=1&mode=legacy",
    "qemu+ssh://[::ffff:10.0.0.1]/session",
    "qemu+ssh://-oProxyCommand=x/system", "qemu+ssh://h/system?command=id", "qemu+ssh://[1::2::3]/system",
    "qemu+ssh://[10.0.0.1]/system", "qemu+ssh://h:65536/system", "qemu+tcp://h/system#x", "QEMU:///system",
    "qemu+ssh://h/system?no_tty=1&no_tty=1", "qemu+ssh://u:pw@h/system",
])
def test_pattern_and_validator_agree(text: str) -> None:
    assert bool(GRAMMAR.fullmatch(text)) == accepted(text)
