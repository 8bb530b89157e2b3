"""Kernel network settings of a namespace (/proc/sys/net), read and written with fixed argv.

In the caller's own namespace the files are written directly; inside ``--netns`` through
``ip netns exec NS sysctl`` (/proc/sys/net shows the namespace of the process that opens it).
Keys are built only from nestor's own interface names, never from user input.
"""

from __future__ import annotations

from pathlib import Path

from .run import run

PROC_SYS = Path("/proc/sys")


def ipv6_available() -> bool:
    """IPv6 is a kernel-wide feature: without it there is nothing to switch off."""
    return (PROC_SYS / "net" / "ipv6").is_dir()


def _path(key: str) -> Path:
    return PROC_SYS.joinpath(*key.split("."))


def read(netns: str | None, key: str) -> str:
    if netns is None:
        return _path(key).read_text().strip()
    return run(["sysctl", "-n", key], netns).strip()


def write(netns: str | None, values: dict[str, str]) -> None:
    if not values:
        return
    if netns is None:
        for key, value in values.items():
            _path(key).write_text(f"{value}\n")
        return
    run(["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in values.items())], netns)


def bridge_ipv6(ifname: str, private: bool) -> dict[str, str]:
    """A bridge nestor makes never learns routes or addresses from guests; a private one has
    no IPv6 at all (the host must not be reachable from its VMs, not even over link-local)."""
    if not ipv6_available():
        return {}
    conf = f"net.ipv6.conf.{ifname}"
    values = {f"{conf}.accept_ra": "0", f"{conf}.autoconf": "0", f"{conf}.accept_redirects": "0"}
    values[f"{conf}.disable_ipv6"] = "1" if private else "0"
    return values


def tap_ipv6(ifname: str) -> dict[str, str]:
    """A tap is a bridge port: the host needs no IPv6 on it (no link-local, no RA, no DAD)."""
    if not ipv6_available():
        return {}
    return {f"net.ipv6.conf.{ifname}.disable_ipv6": "1"}
