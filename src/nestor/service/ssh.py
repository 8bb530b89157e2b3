"""``vm ssh NAME [-- CMD]``: find the guest's address and run OpenSSH's client (an argv, never
a shell string).

The address, in order: the DHCP lease of one of the VM's MACs on a nestor NAT switch (dnsmasq's
lease file); else what the guest agent reports (``guest-network-get-interfaces``); else the
static address given with ``adapter set --ip``. The key is the private key beside the public
key given at ``vm new`` (``x.pub`` -> ``x``), or ssh's own defaults. Host keys are accepted on
first use and then checked (``StrictHostKeyChecking=accept-new``), in one known_hosts file per
nestor home. When the VM's adapters live in a network namespace, ssh runs inside it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import cloudinit, paths
from ..engine import process
from ..engine.qmp import Agent
from ..errors import GuestError, NotFound, StateError
from ..model import validate_name
from ..net import dnsmasq

if TYPE_CHECKING:
    from .core import Core

KNOWN_HOSTS = "known_hosts"
AGENT_TIMEOUT = 5.0
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class Target:
    address: str
    how: str  # "dhcp lease" | "guest agent" | "static"
    user: str | None
    key: Path | None
    netns: str | None


def agent_addresses(interfaces: Any) -> list[str]:
    """IPv4 addresses from guest-network-get-interfaces, loopback and link-local left out. Pure.
    The answer comes from the guest: whatever is malformed in it is skipped."""
    found: list[str] = []
    for iface in interfaces if isinstance(interfaces, list) else []:
        if not isinstance(iface, dict) or iface.get("name") == "lo":
            continue
        addrs = iface.get("ip-addresses")
        for addr in addrs if isinstance(addrs, list) else []:
            if not isinstance(addr, dict) or addr.get("ip-address-type") != "ipv4":
                continue
            try:
                ip = ipaddress.IPv4Address(addr.get("ip-address"))
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local):
                found.append(str(ip))
    return found


def target(core: Core, vm: str) -> Target:
    from .diskvms import GuestRepo

    config = core.vms.get(validate_name(vm))
    vm_dir = core.vm_dir(config)
    if process.live_pid(vm_dir) is None:
        raise StateError(f"vm '{vm}' is not running", hint=f"nestor vm start {vm}")
    repo = GuestRepo(core.conn)
    guest = repo.find(config.id)
    user = guest.user if guest else None
    key = cloudinit.private_key_for(Path(guest.ssh_key)) if guest and guest.ssh_key else None
    adapters = core.network.store.adapters_of_vm(config.id)
    netns = adapters[0].netns if adapters else core.netns
    for a in adapters:
        nat = core.network.store.nat_of_switch(a.switch_id)
        if nat is not None and nat.dhcp:
            for lease in dnsmasq.leases(core.network.files.dnsmasq_leases(nat.id)):
                if lease["mac"].lower() == a.mac.lower():
                    return Target(lease["ip"], "dhcp lease", user, key, a.netns)
    sock = vm_dir / paths.QGA_SOCK
    if sock.exists():
        try:
            with Agent(sock, vm, timeout=AGENT_TIMEOUT) as agent:
                addresses = agent_addresses(agent.execute("guest-network-get-interfaces"))
            if addresses:
                return Target(addresses[0], "guest agent", user, key, netns)
        except GuestError:
            pass
    for a in adapters:
        static = repo.static_address(a.id)
        if static is not None:
            return Target(static.address.split("/")[0], "static", user, key, a.netns)
    raise NotFound(f"no address found for vm '{vm}' (no DHCP lease, the guest agent did not answer, no --ip)",
                   hint=f"wait for the guest to boot (nestor vm log {vm}), or give one: nestor adapter set {vm} --ip A/N")


def ssh_argv(t: Target, known_hosts: Path, command: list[str]) -> list[str]:
    """OpenSSH's argv (pure). ``command`` goes after ``--`` as separate arguments."""
    argv = ["ip", "netns", "exec", t.netns] if t.netns else []
    argv += ["ssh", "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={known_hosts}",
             "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", "BatchMode=yes" if command else "BatchMode=no"]
    if t.key is not None:
        argv += ["-i", str(t.key), "-o", "IdentitiesOnly=yes"]
    if t.user:
        argv += ["-l", t.user]
    argv += ["--", t.address, *command]
    return argv


def known_hosts(core: Core) -> Path:
    return core.home.root / KNOWN_HOSTS
