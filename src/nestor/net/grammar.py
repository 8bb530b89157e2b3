"""The regular expressions of network input, exactly what net/addresses.py accepts (pure).

The OpenAPI document states each as a field's pattern (api/rules.py), so the schema admits what the
server accepts and nothing else: a MAC (unicast, not all zero, not nestor's bridge prefix), a
switch's ADDR/PREFIX (a host address, not the network or broadcast one, its network clear of the
reserved ones) and a NAT's prefix (a network, /2 to /30, clear of the reserved ones). The CIDR
patterns are built octet by octet from the same reserved networks and bounds the validators use;
tests/unit/test_net_grammar.py runs the same examples through both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

_HEX = "[0-9A-Fa-f]"


def _mac() -> str:
    x2 = f"{_HEX}{{2}}"
    nonzero = f"(?:[1-9A-Fa-f]{_HEX}|0[1-9A-Fa-f])"
    forms = []
    for sep in (":", "-"):
        rest = [f"(?:{sep}{x2}){{{n}}}" if n else "" for n in range(6)]
        zero_first = [f"00{(sep + '00') * k}{sep}{nonzero}{rest[4 - k]}" for k in range(5)]
        forms += [
            f"(?:[1-9A-Fa-f][02468aceACE]|0[468aceACE]){rest[5]}",  # unicast, not 00, not 02
            f"02{sep}(?:[0-57-9A-Fa-f]{_HEX}|6[0-9A-Da-dFf]){rest[4]}",  # 02, not 02:6e
            f"02{sep}6[eE]{sep}(?:[0-68-9A-Fa-f]{_HEX}|7[0-24-9A-Fa-f]){rest[3]}",  # 02:6e, not 02:6e:73
            *zero_first,  # 00:…, not all zero
        ]
    return "|".join(forms)


MAC = _mac()


# -- dotted quads ---------------------------------------------------------------------------------
def _digits(lo: str, hi: str) -> str:
    """Numbers lo..hi of the same number of digits."""
    if lo == hi:
        return lo
    if len(lo) == 1:
        return f"[{lo}-{hi}]"
    if lo[0] == hi[0]:
        return lo[0] + _digits(lo[1:], hi[1:])
    n = len(lo) - 1
    parts, start, end = [], int(lo[0]), int(hi[0])
    if lo[1:] != "0" * n:
        parts.append(lo[0] + _digits(lo[1:], "9" * n))
        start += 1
    tail = None
    if hi[1:] != "9" * n:
        tail = hi[0] + _digits("0" * n, hi[1:])
        end -= 1
    if start <= end:
        parts.append((str(start) if start == end else f"[{start}-{end}]") + "[0-9]" * n)
    if tail:
        parts.append(tail)
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


def _run(lo: int, hi: int) -> list[str]:
    out = []
    for a, b in ((0, 9), (10, 99), (100, 255)):
        low, high = max(lo, a), min(hi, b)
        if low <= high:
            out.append(_digits(str(low), str(high)))
    return out


def octets(values: Iterable[int]) -> str:
    """An octet (0-255, no leading zeros) among VALUES."""
    ordered = sorted(set(values))
    runs: list[tuple[int, int]] = []
    for v in ordered:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    parts = [p for lo, hi in runs for p in _run(lo, hi)]
    return parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"


# The validators' own tables (net/addresses.py imports them from here).
RESERVED: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "'this network' (0.0.0.0/8)"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "loopback (127.0.0.0/8)"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "link-local (169.254.0.0/16)"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "multicast (224.0.0.0/4)"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "reserved (240.0.0.0/4)"),
)
MIN_HOST_PREFIXLEN = 2  # /0 and /1 would claim (half) the whole IPv4 space
MAX_NAT_PREFIXLEN = 30  # at least two usable hosts: the switch and one VM
_SPANS = [(int(n.network_address), int(n.broadcast_address)) for n, _ in RESERVED]

State = tuple[int, object, bool, bool, int]  # bits read, network (clear or open), host bits all 0, all 1, prefix


def _addresses(length: int, accept: Callable[[bool, bool], bool]) -> str | None:
    """Dotted quads whose network of LENGTH is clear of RESERVED and whose host bits (all zero?
    all one?) ACCEPT takes, as a regular expression built octet by octet (equal states shared)."""
    memo: dict[State, str | None] = {}

    def network(prefix: int, bits: int) -> object:
        known = min(bits, length)
        top = prefix >> (bits - known)
        lo, hi = top << (32 - known), ((top + 1) << (32 - known)) - 1
        if not any(lo <= b and a <= hi for a, b in _SPANS):
            return "clear"
        if any(a <= lo and hi <= b for a, b in _SPANS) or known == length:
            return None  # every network here overlaps a reserved one
        return ("open", known, top)

    def regex(state: State) -> str | None:
        if state in memo:
            return memo[state]
        bits, net, zero, one, prefix = state
        assert isinstance(bits, int) and isinstance(prefix, int)
        if bits == 32:
            memo[state] = "" if net == "clear" and accept(zero, one) else None
            return memo[state]
        groups: dict[State, list[int]] = {}
        for v in range(256):
            p, b = (prefix << 8) | v, bits + 8
            n = network(p, b) if net != "clear" else "clear"
            if n is None:
                continue
            host = [(v >> (7 - i)) & 1 for i in range(8) if bits + i >= length]
            z, o = zero and not any(host), one and all(host)
            nxt: State = (b, n, z, o, p if n != "clear" else 0)
            groups.setdefault(nxt, []).append(v)
        parts = []
        for nxt, values in groups.items():
            rest = regex(nxt)
            if rest is not None:
                parts.append(octets(values) + (r"\." + rest if bits < 24 else ""))
        memo[state] = None if not parts else parts[0] if len(parts) == 1 else "(?:" + "|".join(parts) + ")"
        return memo[state]

    return regex((0, "open", True, True, 0))


def _cidr(lengths: range, accept: Callable[[int], Callable[[bool, bool], bool]]) -> str:
    found = ((n, _addresses(n, accept(n))) for n in reversed(lengths))
    return "|".join(f"{addresses}/{n}" for n, addresses in found if addresses is not None)  # (none at /2)


def cidr() -> str:
    """parse_interface + check_host_address: a host address (any, for /31 and /32)."""
    return _cidr(range(MIN_HOST_PREFIXLEN, 33), lambda n: (lambda zero, one: n >= 31 or not (zero or one)))


def nat_prefix() -> str:
    """parse_prefix: a network address (no host bits)."""
    return _cidr(range(MIN_HOST_PREFIXLEN, MAX_NAT_PREFIXLEN + 1), lambda n: (lambda zero, one: zero))


def render() -> str:
    """net/patterns.py: the patterns written out (building them takes ~0.5 s: not at every import)."""
    lines = ["# ruff: noqa: E501", '"""Generated by `python -m nestor.net.grammar` from net/grammar.py: do not edit',
             '(tests/unit/test_net_grammar.py checks it is current)."""', ""]
    lines += [f"{name} = {value!r}" for name, value in (("MAC", MAC), ("CIDR", cidr()), ("NAT_PREFIX", nat_prefix()))]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from pathlib import Path

    target = Path(__file__).with_name("patterns.py")
    target.write_text(render())
    print(f"wrote {target}")
