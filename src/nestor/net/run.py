"""Subprocesses of the network code (nft, sysctl, dnsmasq): argv lists only, always a timeout."""

from __future__ import annotations

import subprocess

from ..errors import HostError

TIMEOUT = 15.0
PACKAGES = {"nft": "nftables", "dnsmasq": "dnsmasq-base", "ip": "iproute2", "sysctl": "procps"}


def in_netns(netns: str | None, argv: list[str]) -> list[str]:
    """The argv to run ``argv`` inside ``netns`` (``ip netns exec`` execs: the PID is the program's)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(argv: list[str], netns: str | None = None, stdin: str | None = None,
        timeout: float = TIMEOUT) -> str:
    """Run, return stdout; a failure becomes a HostError carrying the program's own message."""
    full = in_netns(netns, argv)
    try:
        result = subprocess.run(full, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        package = PACKAGES.get(full[0], full[0])
        raise HostError(f"{full[0]} is not installed", hint=f"apt-get install {package}") from exc
    except subprocess.TimeoutExpired as exc:
        raise HostError(f"{argv[0]} did not finish within {timeout:g} s") from exc
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
        message = detail[0] if detail else f"exit status {result.returncode}"
        if len(detail) > 1 and argv[0] == "nft":
            message = " / ".join(line.strip() for line in detail[:3])
        raise HostError(f"{argv[0]} failed: {message}")
    return result.stdout
