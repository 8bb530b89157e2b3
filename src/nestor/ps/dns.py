"""DNS servers given with `netsh interface ip add dnsserver` (or Set-DnsClientServerAddress).

nestor's store has no place for a switch's DNS servers yet, so `nestor ps` keeps them in one
JSON file in the home (``ps/dns-servers.json``), keyed by switch name and bridge (a switch made
again under the same name starts empty). Nothing applies them yet: a NAT's dnsmasq hands its
guests the switch's own address as DNS server and forwards to the resolvers of the switch's
network namespace. See docs/decisions.md (2026-11-27, `nestor ps`: DNS servers).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
from pathlib import Path
from typing import Any

FILE = Path("ps") / "dns-servers.json"


def _path(home: Path) -> Path:
    return home / FILE


def _load(home: Path) -> dict[str, Any]:
    try:
        data = json.loads(_path(home).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(home: Path, data: dict[str, Any]) -> None:
    path = _path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def servers(home: Path, switch: str, bridge: str) -> list[str]:
    entry = _load(home).get(switch)
    if not isinstance(entry, dict) or entry.get("bridge") != bridge:
        return []
    return [str(s) for s in entry.get("servers", [])]


def add(home: Path, switch: str, bridge: str, server: ipaddress.IPv4Address, index: int | None = None) -> list[str]:
    """Add a server (at a 1-based index, as netsh's index=); returns the switch's list."""
    data = _load(home)
    current = servers(home, switch, bridge)
    with contextlib.suppress(ValueError):
        current.remove(str(server))
    position = len(current) if index is None else max(0, min(index - 1, len(current)))
    current.insert(position, str(server))
    data[switch] = {"bridge": bridge, "servers": current}
    _save(home, data)
    return current


def replace(home: Path, switch: str, bridge: str, new: list[ipaddress.IPv4Address]) -> list[str]:
    data = _load(home)
    listed = list(dict.fromkeys(str(s) for s in new))
    data[switch] = {"bridge": bridge, "servers": listed}
    _save(home, data)
    return listed


def forget(home: Path, switch: str) -> None:
    """The switch is gone (Remove-VMSwitch): drop its servers."""
    data = _load(home)
    if data.pop(switch, None) is not None:
        _save(home, data)
