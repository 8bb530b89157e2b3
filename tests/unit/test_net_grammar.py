"""The document's MAC, CIDR and libvirt URI patterns accept exactly what the server's validators accept (issue 18).

The same examples go through the OpenAPI document's pattern (as FastAPI's pydantic and the plain dispatcher read it)
and through net/addresses.py's (or remote/uri.py's) validator; they must agree on each. Besides hand-picked edges
(case, separators, whitespace, leading zeros, netmask forms, reserved networks, network and
broadcast addresses), random addresses of every length, many at a network's edges.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from typing import Annotated, Any

from nestor.api import rules
from nestor.api.table import obeys
from nestor.errors import InvalidInput
from nestor.net import addresses, grammar, patterns
from nestor.remote import uri


def _schema(pattern: str) -> Callable[[str], bool]:
    """The document's pattern as both servers read it: pydantic (FastAPI; `$` is the end, as in
    ECMA-262) and the plain dispatcher's table.obeys; they must agree with each other too."""
    from pydantic import Field, TypeAdapter, ValidationError

    adapter: TypeAdapter[str] = TypeAdapter(Annotated[str, Field(pattern=pattern)])

    def admits(text: str) -> bool:
        try:
            adapter.validate_python(text)
            fastapi = True
        except ValidationError:
            fastapi = False
        assert obeys(text, {"pattern": pattern}) == fastapi, text
        return fastapi
    return admits


def _server(check: Callable[[str], Any]) -> Callable[[str], bool]:
    def accepts(text: str) -> bool:
        try:
            check(text)
        except InvalidInput:
            return False
        return True
    return accepts


def _agree(pattern: str, check: Callable[[str], Any], examples: list[str]) -> list[str]:
    schema, server = _schema(pattern), _server(check)
    return [f"{e!r}: schema {schema(e)}, server {server(e)}" for e in examples if schema(e) != server(e)]


MACS = ["52:54:00:12:34:56", "52-54-00-12-34-56", "52:54:00:AB:cd:EF", "52:54-00:12:34:56", "00:00:00:00:00:00",
        "00-00-00-00-00-01", "00:00:00:00:01:00", "01:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "02:6e:73:00:00:01",
        "02:6E:73:00:00:01", "02-6e-73-aa-bb-cc", "02:6e:74:00:00:01", "02:6f:73:00:00:01", "02:00:00:00:00:01",
        "fe:ff:ff:ff:ff:ff", " 52:54:00:12:34:56", "52:54:00:12:34:56\n", "52:54:00:12:34", "52:54:00:12:34:56:78",
        "5254.0012.3456", "g2:54:00:12:34:56", "", "52:54:00:12:34:5", "\uff15\uff12:54:00:12:34:56"]


def test_mac_pattern_is_the_validator() -> None:
    rng = random.Random(18)
    randoms = []
    for _ in range(3000):
        octets = [rng.choice([0, 2, rng.randrange(256)]) for _ in range(6)]
        if rng.random() < 0.2:
            octets[:3] = [0x02, 0x6E, 0x73]
        text = rng.choice([":", "-"]).join(f"{o:02x}" for o in octets)
        randoms.append(text.upper() if rng.random() < 0.2 else text)
    assert not _agree(rules.MAC, addresses.validate_mac, MACS + randoms)
    assert _schema(rules.MAC)("52:54:00:12:34:56") and not _schema(rules.MAC)("02:6e:73:00:00:01")


EDGES = ["192.168.100.1/24", "192.168.100.0/24", "192.168.100.255/24", "10.0.0.0/31", "10.0.0.1/32", "10.0.0.0/32",
         "127.0.0.1/8", "169.254.1.1/16", "169.253.1.1/16", "169.254.1.1/15", "169.1.1.1/8", "224.0.0.1/4",
         "223.255.255.254/8", "1.0.0.1/1", "64.0.0.1/2", "32.0.0.1/3", "0.0.0.1/8", "1.2.3.4", "1.2.3.4/33",
         "1.2.3.4/024", "01.2.3.4/24", "1.2.3.4/255.255.255.0", " 1.2.3.4/24", "1.2.3.4/24\n", "1.2.3.256/24",
         "192.168.100.0/30", "192.168.100.4/30", "192.168.100.2/30", "10.0.0.0/8", "32.0.0.0/3", "64.0.0.0/2",
         "0.0.0.0/0", "128.0.0.0/1", "10.0.0.0/29", "::1/128", "", "/24", "1.2.3/24", "1.2.3.4/-1", "1.2.3.\uff14/24"]


def _randoms(seed: int, n: int) -> list[str]:
    rng, out = random.Random(seed), []
    for _ in range(n):
        length = rng.randrange(33)
        address = rng.getrandbits(32)
        host = (1 << (32 - length)) - 1
        edge = rng.random()
        if edge < 0.3:
            address &= ~host  # the network address
        elif edge < 0.45:
            address |= host  # the broadcast address
        out.append(f"{ipaddress.IPv4Address(address)}/{length}")
    return out


def test_cidr_pattern_is_the_switch_address_validator() -> None:
    assert not _agree(rules.CIDR, addresses.host_address, EDGES + _randoms(18, 4000))


def test_nat_prefix_pattern_is_the_nat_prefix_validator() -> None:
    assert not _agree(rules.NAT_PREFIX, addresses.parse_prefix, EDGES + _randoms(19, 4000))


def test_the_written_patterns_are_current() -> None:
    """net/patterns.py is net/grammar.py's output (`python -m nestor.net.grammar` writes it)."""
    from pathlib import Path

    assert Path(patterns.__file__).read_text() == grammar.render()


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


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


URIS = ["qemu+ssh://root@host-a/system", "qemu+tls://host-b.example/system?mode=direct", "qemu:///system",
        "test:///default", "qemu+ssh://admin@[fd00::2]:2222/system?no_tty=1&mode=legacy",
        "qemu+ssh://[::ffff:10.0.0.1]/session", "qemu+ssh://-oProxyCommand=x/system", "qemu+ssh://h/system?command=id",
        "qemu+ssh://[1::2::3]/system", "qemu+ssh://[10.0.0.1]/system", "qemu+ssh://h:65536/system",
        "qemu+tcp://h/system#x", "QEMU:///system", "qemu+ssh://h/system?no_tty=1&no_tty=1", "qemu+ssh://u:pw@h/system"]


def test_uri_pattern_is_the_host_uri_validator() -> None:
    """Bracketed IPv6 hosts included: the pattern, the validator and ipaddress agree on every shape."""
    shapes = _ipv6_shapes()
    ipv6 = [f"qemu+ssh://root@[{shape}]:22/system" for shape in shapes]
    assert not _agree(rules.URI, uri.validate, URIS + ipv6)
    server = _server(uri.validate)
    assert [shape for shape, text in zip(shapes, ipv6, strict=True) if server(text) != _is_ipv6(shape)] == []
