"""cloud-init NoCloud seeds: user-data, meta-data and network-config, written with cloud-localds.

The rendering is pure (dict/str in, str out); :func:`write_seed` runs Debian's ``cloud-localds``
(cloud-image-utils) to make the ISO9660 medium labelled ``cidata``. JSON is valid YAML, so the
documents are written with ``json.dumps`` under their ``#cloud-config`` header: no YAML library.

Network: every adapter is matched by its MAC. An adapter with ``adapter set --ip`` gets that
static address, its gateway as the default route and its DNS servers; the others use DHCP
(network-config version 2).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import files
from .errors import HostError, InvalidInput

SEED = "seed.iso"
DEFAULT_USER = "debian"
DEFAULT_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
USER_DATA_STARTS = ("#cloud-config", "#!", "#include", "#cloud-boothook", "Content-Type:")
MAX_USER_DATA = 1 << 20

_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # fullmatch: `$` would let a trailing newline through
_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", re.IGNORECASE)
MAX_KEY_FILE = 64 << 10
_KEY_RE = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+)\s+[A-Za-z0-9+/]+={0,3}(\s.*)?$")


@dataclass(frozen=True)
class StaticAddress:
    """``adapter set VM --ip A/N --gateway G --dns D[,D]``."""

    address: str  # A/N
    gateway: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True)
class NicConfig:
    mac: str
    static: StaticAddress | None = None


@dataclass(frozen=True)
class SeedSpec:
    instance_id: str
    hostname: str
    user: str | None = DEFAULT_USER
    ssh_keys: tuple[str, ...] = ()
    user_data: str | None = None  # --cloud-init FILE's content, verbatim (replaces the generated one)
    nics: tuple[NicConfig, ...] = ()


# --------------------------------------------------------------------------------------------
# Validation of the flags (pure)
# --------------------------------------------------------------------------------------------


def validate_user(user: str) -> str:
    if not _USER_RE.fullmatch(user):
        raise InvalidInput(f"invalid user name '{user}'",
                           hint="lower-case letters, digits, '_' and '-', at most 32, starting with a letter")
    if user == "root":
        raise InvalidInput("--user root is not allowed (cloud-init makes a sudo user)", hint="e.g. --user debian")
    return user


def validate_hostname(hostname: str) -> str:
    labels = hostname.split(".")
    if len(hostname) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise InvalidInput(f"invalid hostname '{hostname}'",
                           hint="letters, digits and '-' (labels of at most 63, dot-separated)")
    return hostname


def read_public_key(path: Path) -> str:
    """The first key line of a public key file, checked."""
    return read_public_keys(path)[0]


def read_public_keys(path: Path) -> tuple[str, ...]:
    """Every key line of a public key file (one key, or several as in authorized_keys), checked:
    the guest user's authorized keys are all of them."""
    text = files.read_capped(path, MAX_KEY_FILE, "ssh key file",
                             hint="give a public key such as ~/.ssh/id_ed25519.pub").decode(errors="replace")
    if "PRIVATE KEY" in text:
        raise InvalidInput(f"'{path}' is a private key", hint=f"give the public key ({path}.pub)")
    keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not keys or not all(is_public_key(key) for key in keys):
        raise InvalidInput(f"'{path}' is not an OpenSSH public key file", hint="e.g. ssh-keygen -t ed25519 makes one")
    return tuple(keys)


def is_public_key(line: str) -> bool:
    """One OpenSSH public key line (`ssh-ed25519 AAAA… comment`)? Pure."""
    return "\n" not in line and "PRIVATE KEY" not in line and _KEY_RE.match(line) is not None


def default_public_key(home: Path | None = None) -> Path | None:
    """The invoking user's ~/.ssh/id_*.pub, if one exists."""
    top = (home or Path.home()) / ".ssh"
    for name in DEFAULT_KEYS:
        if (top / name).is_file():
            return top / name
    return None


def private_key_for(public: Path) -> Path | None:
    """The private key beside a public key (``x.pub`` -> ``x``), if it exists."""
    if public.suffix == ".pub" and public.with_suffix("").is_file():
        return public.with_suffix("")
    return None


def read_user_data(path: Path) -> str:
    data = files.read_capped(path, MAX_USER_DATA, "cloud-init file", hint="give a #cloud-config file of at most 1 MiB")
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"cloud-init file '{path}' is not UTF-8 text", hint="give a #cloud-config file") from exc
    if not text.startswith(USER_DATA_STARTS):
        raise InvalidInput(f"cloud-init file '{path}' does not start with #cloud-config (or #!, #include)",
                           hint="the first line of user-data names its type, e.g. #cloud-config")
    return text


def parse_static(ip: str, gateway: str | None, dns: Sequence[str]) -> StaticAddress:
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError as exc:
        raise InvalidInput(f"invalid address '{ip}'", hint="ADDRESS/PREFIX, e.g. 192.168.100.10/24") from exc
    if "/" not in ip or iface.version != 4:
        raise InvalidInput(f"address '{ip}' needs an IPv4 prefix length", hint="e.g. 192.168.100.10/24")
    if iface.ip in (iface.network.network_address, iface.network.broadcast_address) and iface.network.prefixlen < 31:
        raise InvalidInput(f"address '{ip}' is its network's network or broadcast address", hint="choose a host address")
    gw = None
    if gateway:
        try:
            gw_ip = ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise InvalidInput(f"invalid gateway '{gateway}'", hint="an IPv4 address, e.g. 192.168.100.1") from exc
        if gw_ip not in iface.network or gw_ip == iface.ip:
            raise InvalidInput(f"gateway {gateway} is not another address in {iface.network}",
                               hint=f"give an address of {iface.network}")
        gw = str(gw_ip)
    servers: list[str] = []
    for server in dns:
        try:
            servers.append(str(ipaddress.ip_address(server)))
        except ValueError as exc:
            raise InvalidInput(f"invalid DNS server '{server}'", hint="an IP address, e.g. 192.168.100.1") from exc
    return StaticAddress(str(iface), gw, tuple(servers))


# --------------------------------------------------------------------------------------------
# Rendering (pure)
# --------------------------------------------------------------------------------------------


def meta_data(spec: SeedSpec) -> str:
    return json.dumps({"instance-id": spec.instance_id, "local-hostname": spec.hostname}, indent=2) + "\n"


def user_data(spec: SeedSpec) -> str:
    if spec.user_data is not None:
        return spec.user_data
    # No ssh_pwauth: setting it restarts sshd in the middle of the first boot (and the user's
    # password is locked anyway).
    doc: dict[str, Any] = {"hostname": spec.hostname}
    if spec.user:
        user: dict[str, Any] = {"name": spec.user, "shell": "/bin/bash", "lock_passwd": True,
                                "sudo": "ALL=(ALL) NOPASSWD:ALL", "groups": ["sudo"]}
        if spec.ssh_keys:
            user["ssh_authorized_keys"] = list(spec.ssh_keys)
        doc["users"] = [user]
    return "#cloud-config\n" + json.dumps(doc, indent=2) + "\n"


def network_config(nics: Sequence[NicConfig]) -> str | None:
    """network-config version 2, each adapter matched by MAC; None: no adapters (cloud-init's
    fallback applies)."""
    if not nics:
        return None
    ethernets: dict[str, Any] = {}
    for index, nic in enumerate(nics):
        entry: dict[str, Any] = {"match": {"macaddress": nic.mac.lower()}, "set-name": f"eth{index}"}
        if nic.static is None:
            entry["dhcp4"] = True
        else:
            entry["dhcp4"] = False
            entry["addresses"] = [nic.static.address]
            if nic.static.gateway:
                entry["routes"] = [{"to": "0.0.0.0/0", "via": nic.static.gateway}]
            if nic.static.dns:
                entry["nameservers"] = {"addresses": list(nic.static.dns)}
        ethernets[f"eth{index}"] = entry
    return json.dumps({"version": 2, "ethernets": ethernets}, indent=2) + "\n"


# --------------------------------------------------------------------------------------------
# Writing the medium
# --------------------------------------------------------------------------------------------


def write_seed(spec: SeedSpec, vm_dir: Path) -> Path:
    """``vm_dir/seed.iso`` made by cloud-localds from the rendered documents."""
    work = vm_dir / "seed"
    files.private_dir(work, parents=False)
    files.write_private(work / "user-data", user_data(spec))
    files.write_private(work / "meta-data", meta_data(spec))
    argv = ["cloud-localds"]
    network = network_config(spec.nics)
    if network is not None:
        files.write_private(work / "network-config", network)
        argv.append(f"--network-config={work / 'network-config'}")
    else:
        (work / "network-config").unlink(missing_ok=True)
    seed = vm_dir / SEED
    tmp = vm_dir / f".{SEED}.tmp"
    argv += [str(tmp), str(work / "user-data"), str(work / "meta-data")]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError as exc:
        raise HostError("cloud-localds is not installed", hint="apt-get install cloud-image-utils") from exc
    if proc.returncode != 0:
        raise HostError(f"cloud-localds failed: {proc.stderr.strip()}", hint="apt-get install cloud-image-utils genisoimage")
    files.tighten(tmp)  # the seed carries the user's key and user-data: root's alone
    os.replace(tmp, seed)
    return seed
