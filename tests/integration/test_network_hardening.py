"""The host's network stays the host's (issue 8, section 1), on the real kernel.

Same safety rules as test_network.py: every bridge, tap, address, route, NAT and dnsmasq lives
in namespaces this test made, nestor always gets --netns, the finalizers end our QEMUs and
dnsmasqs by PID and delete the namespaces. The "uplinks" are veths and bridges made here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor import paths
from nestor.images.nested_host import BOOT_LINE as L1_BOOT_LINE
from nestor.net import dnsmasq, names
from tests.helpers import nestor, reap_home, vm_dir, wait_for_text
from tests.integration.test_network import NewNetns, as_json, boot, cli, netns_maker, sh, subnet

pytestmark = pytest.mark.vm

FRAMES = Path(__file__).parent / "data" / "hostile_frames.py"


def nsexec(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *argv)


PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], 9), timeout=3)
except ConnectionRefusedError:
    pass  # a TCP reset: the address answered
"""


def reachable(ns: str, address: str) -> bool:
    """A TCP connection attempt from inside ``ns``: refused (or accepted) means it answered."""
    return nsexec(ns, sys.executable, "-c", PROBE, address).returncode == 0


def sysctl(ns: str, key: str) -> str:
    return nsexec(ns, "sysctl", "-n", key).stdout.strip()


def tag(home: Path) -> str:
    return names.home_tag(home)


def counters(ns: str, home: Path) -> dict[str, int]:
    out = nsexec(ns, "nft", "-j", "list", "counters", "table", "bridge", names.guard_table(tag(home))).stdout
    return {c["counter"]["name"]: int(c["counter"]["packets"])
            for c in json.loads(out)["nftables"] if "counter" in c}


def host_view(ns: str) -> dict[str, object]:
    """The namespace's addresses, routes (v4 and v6) and neighbours, minus counters and timers."""
    addrs = {(link["ifname"], a["local"], a["prefixlen"])
             for link in json.loads(sh("ip", "-n", ns, "-j", "addr").stdout) for a in link.get("addr_info", [])}
    routes = {json.dumps({k: r.get(k) for k in ("dst", "gateway", "dev", "protocol")}, sort_keys=True)
              for fam in ("-4", "-6") for r in json.loads(sh("ip", "-n", ns, fam, "-j", "route").stdout)}
    return {"addresses": sorted(addrs), "routes": sorted(routes)}


@pytest.fixture
def netns(home: Path) -> Iterator[NewNetns]:
    yield from netns_maker(home)


# -- 1. IPv6 on bridges and taps ------------------------------------------------------------------
def test_bridges_learn_nothing_from_guests_and_private_has_no_ipv6(home: Path, netns: NewNetns) -> None:
    ns = netns()
    cli(home, ns, "switch", "new", "int", "--type", "internal")
    cli(home, ns, "switch", "new", "priv", "--type", "private")
    internal = as_json(home, ns, "switch", "show", "int")["bridge"]  # type: ignore[index]
    private = as_json(home, ns, "switch", "show", "priv")["bridge"]  # type: ignore[index]
    for bridge in (internal, private):
        assert sysctl(ns, f"net.ipv6.conf.{bridge}.accept_ra") == "0"
        assert sysctl(ns, f"net.ipv6.conf.{bridge}.autoconf") == "0"
    assert sysctl(ns, f"net.ipv6.conf.{internal}.disable_ipv6") == "0"
    assert sysctl(ns, f"net.ipv6.conf.{private}.disable_ipv6") == "1"
    link = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", private).stdout)[0]
    assert not [a for a in link.get("addr_info", []) if a["family"] == "inet6"]  # not even link-local


# -- 3. switch set-ip refuses addresses that would take over the host -------------------------------
def test_set_ip_refuses_special_and_overlapping_networks(home: Path, netns: NewNetns) -> None:
    ns, other = netns(), netns()
    assert sh("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", other).returncode == 0
    sh("ip", "-n", ns, "addr", "add", "10.50.0.1/16", "dev", "up0")
    sh("ip", "-n", ns, "link", "set", "up0", "up")
    assert sh("ip", "-n", ns, "route", "add", "10.60.0.0/16", "via", "10.50.0.254").returncode == 0
    sh("ip", "-n", ns, "route", "add", "default", "via", "10.50.0.254")
    cli(home, ns, "switch", "new", "lan", "--type", "internal")
    bridge = as_json(home, ns, "switch", "show", "lan")["bridge"]  # type: ignore[index]
    before = host_view(ns)
    cases = {
        "10.50.3.1/24": "address 10.50.0.1/16 on up0",
        "10.60.9.1/24": "route 10.60.0.0/16 via 10.50.0.254 dev up0",
        "10.0.0.1/1": "half of all",
        "10.0.0.1/0": "every",
        "127.0.0.2/8": "loopback",
        "224.0.0.1/24": "multicast",
        "240.0.0.1/24": "reserved",
        "169.254.3.1/16": "link-local",
        "0.0.0.1/8": "this network",
    }
    for address, reason in cases.items():
        result = cli(home, ns, "switch", "set-ip", "lan", address, check=False)
        lines = result.stderr.strip().splitlines()
        assert result.returncode != 0 and reason in lines[0] and lines[0].startswith("error: "), result.stderr
        assert len(lines) == 2 and lines[1].startswith("hint: "), result.stderr
    assert host_view(ns) == before  # nothing changed
    assert as_json(home, ns, "switch", "show", "lan")["address"] is None  # type: ignore[index]
    # An ordinary network is fine, and so is moving the switch within its own network.
    cli(home, ns, "switch", "set-ip", "lan", "10.70.0.1/24")
    cli(home, ns, "switch", "set-ip", "lan", "10.70.0.2/24")
    shown = as_json(home, ns, "switch", "show", "lan")
    assert shown["host_addresses"] == ["10.70.0.2/24"] and shown["bridge"] == bridge  # type: ignore[index]


# -- 4. external switches don't cut the host off ---------------------------------------------------
def test_uplink_with_addresses_needs_move_addresses_and_gets_them_back(home: Path, netns: NewNetns) -> None:
    ns, other = netns(), netns()
    sh("ip", "-n", ns, "link", "add", "phys0", "type", "veth", "peer", "name", "phys1", "netns", other)
    sh("ip", "-n", ns, "addr", "add", "192.0.2.10/24", "dev", "phys0")
    sh("ip", "-n", ns, "addr", "add", "2001:db8:5::10/64", "dev", "phys0", "nodad")
    sh("ip", "-n", ns, "link", "set", "phys0", "up")
    sh("ip", "-n", other, "addr", "add", "192.0.2.1/24", "dev", "phys1")
    sh("ip", "-n", other, "link", "set", "phys1", "up")
    assert sh("ip", "-n", ns, "route", "add", "default", "via", "192.0.2.1").returncode == 0
    assert sh("ip", "-n", ns, "route", "add", "198.51.100.0/24", "via", "192.0.2.1", "metric", "7").returncode == 0
    before = host_view(ns)

    refused = cli(home, ns, "switch", "new", "ext", "--type", "external", "--uplink", "phys0", check=False)
    assert refused.returncode != 0 and "192.0.2.10/24" in refused.stderr and "--move-addresses" in refused.stderr
    assert host_view(ns) == before and as_json(home, ns, "switch", "list") == []

    cli(home, ns, "switch", "new", "ext", "--type", "external", "--uplink", "phys0", "--move-addresses")
    shown = as_json(home, ns, "switch", "show", "ext")
    bridge = shown["bridge"]  # type: ignore[index]
    assert "192.0.2.10/24" in shown["moved_from_uplink"]  # type: ignore[index]
    moved = host_view(ns)
    on_bridge = {a[1] for a in moved["addresses"] if a[0] == bridge}  # type: ignore[union-attr, index]
    assert {"192.0.2.10", "2001:db8:5::10"} <= on_bridge
    assert not [a for a in moved["addresses"] if a[0] == "phys0" and not a[1].startswith("fe80")]  # type: ignore[union-attr, index]
    routes = sh("ip", "-n", ns, "route").stdout
    assert f"default via 192.0.2.1 dev {bridge}" in routes and f"198.51.100.0/24 via 192.0.2.1 dev {bridge}" in routes
    assert sh("ip", "-n", ns, "link", "show", "phys0").stdout.count(f"master {bridge}") == 1
    assert reachable(ns, "192.0.2.1")  # the host is still online through the bridge

    cli(home, ns, "switch", "remove", "ext")
    after = host_view(ns)
    assert after == before, (before, after)


def test_move_addresses_rolls_back_when_enslaving_fails(home: Path, netns: NewNetns) -> None:
    ns = netns()
    # A bridge cannot be a port of another bridge: the kernel refuses after the move started.
    sh("ip", "-n", ns, "link", "add", "fake0", "type", "bridge")
    sh("ip", "-n", ns, "addr", "add", "192.0.2.20/24", "dev", "fake0")
    sh("ip", "-n", ns, "link", "set", "fake0", "up")
    assert sh("ip", "-n", ns, "route", "add", "default", "via", "192.0.2.1", "dev", "fake0", "onlink").returncode == 0
    before = host_view(ns)
    failed = cli(home, ns, "switch", "new", "ext", "--type", "external", "--uplink", "fake0", "--move-addresses",
                 check=False)
    assert failed.returncode != 0 and failed.stderr.startswith("error: "), failed.stderr
    assert host_view(ns) == before
    assert as_json(home, ns, "switch", "list") == []
    assert f"nsb{tag(home)}" not in sh("ip", "-n", ns, "link").stdout


# -- 5, 6, 7. two homes in one namespace; NAT leaves the host as found; NAT is reconciled ------------
def nat_home(home: Path, ns: str, vm: str) -> str:
    net = subnet()
    cli(home, ns, "switch", "new", "sw", "--type", "internal")
    cli(home, ns, "switch", "set-ip", "sw", f"192.168.{net}.1/24")
    cli(home, ns, "nat", "new", "out", "--switch", "sw", "--prefix", f"192.168.{net}.0/24", "--dhcp")
    boot(home, ns, vm, "echo up\n", "nestor.dhcp=1", "sw")
    return as_json(home, ns, "adapter", "list", vm)[0]["tap"]  # type: ignore[index, no-any-return]


def dnsmasq_pid(home: Path) -> int | None:
    pidfile = next((home / "net").glob("dnsmasq-*.pid"), None)
    return dnsmasq.live_pid(pidfile) if pidfile else None


def test_two_homes_share_a_namespace(home: Path, netns: NewNetns, tmp_path: Path) -> None:
    ns = netns()
    other = tmp_path / "other"
    other.mkdir()
    (other / "images").symlink_to(os.readlink(home / "images"))
    try:
        assert sysctl(ns, "net.ipv4.ip_forward") == "0"
        tap_a = nat_home(home, ns, "a")
        tap_b = nat_home(other, ns, "b")
        assert tag(home) != tag(other) and tap_a != tap_b
        tables = nsexec(ns, "nft", "list", "tables").stdout
        for h in (home, other):
            assert f"bridge {names.guard_table(tag(h))}" in tables and f"inet {names.nat_table(tag(h))}" in tables
        assert sysctl(ns, "net.ipv4.ip_forward") == "1"
        pid_b = dnsmasq_pid(other)
        assert pid_b is not None

        # Home A goes entirely; B keeps its guard, NAT, tap, dnsmasq and forwarding.
        cli(home, ns, "vm", "remove", "a", "--force")
        cli(home, ns, "nat", "remove", "out")
        cli(home, ns, "switch", "remove", "sw")
        tables = nsexec(ns, "nft", "list", "tables").stdout
        assert names.guard_table(tag(home)) not in tables and names.nat_table(tag(home)) not in tables
        assert f"bridge {names.guard_table(tag(other))}" in tables and f"inet {names.nat_table(tag(other))}" in tables
        assert sh("ip", "-n", ns, "link", "show", tap_b).returncode == 0
        assert sh("ip", "-n", ns, "link", "show", tap_a).returncode != 0
        assert dnsmasq_pid(other) == pid_b
        assert sysctl(ns, "net.ipv4.ip_forward") == "1"  # B still needs it
        assert as_json(other, ns, "vm", "show", "b")["state"] == "running"  # type: ignore[index]

        # The last NAT goes: ip_forward is what nestor found.
        cli(other, ns, "nat", "remove", "out")
        assert sysctl(ns, "net.ipv4.ip_forward") == "0"
    finally:
        reap_home(other)
        for pidfile in (other / "net").glob("dnsmasq-*.pid"):
            dnsmasq.stop(pidfile)


def test_nat_is_reconciled_by_nat_commands_and_vm_start(home: Path, netns: NewNetns) -> None:
    ns = netns()
    nat_home(home, ns, "v")
    table = names.nat_table(tag(home))

    def break_nat() -> None:
        pid = dnsmasq_pid(home)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        assert nsexec(ns, "nft", "delete", "table", "inet", table).returncode == 0
        nsexec(ns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        for _ in range(50):
            if dnsmasq_pid(home) is None:
                break
            time.sleep(0.1)
        assert dnsmasq_pid(home) is None

    def assert_nat_back() -> None:
        assert nsexec(ns, "nft", "list", "table", "inet", table).returncode == 0
        assert sysctl(ns, "net.ipv4.ip_forward") == "1"
        assert dnsmasq_pid(home) is not None

    break_nat()
    rows = as_json(home, ns, "nat", "list")
    assert rows[0]["dnsmasq"].startswith("pid ")  # type: ignore[index]
    assert_nat_back()

    cli(home, ns, "vm", "stop", "v", "--turn-off")
    break_nat()
    cli(home, ns, "vm", "start", "v")
    assert_nat_back()
    cli(home, ns, "vm", "remove", "v", "--force")
    cli(home, ns, "nat", "remove", "out")
    assert sysctl(ns, "net.ipv4.ip_forward") == "0"  # as found, even after the reconciles


# -- 2 and 8. a hostile guest -----------------------------------------------------------------------
@pytest.mark.nested
def test_hostile_guest_cannot_take_over_the_host(tmp_path: Path, nested_store: Path) -> None:
    """A guest with python3 (the nested-host image) sends raw forged frames on its eth0."""
    import secrets

    home = tmp_path / "hostile"
    home.mkdir()
    (home / "images").symlink_to(nested_store)
    ns = f"nt-{secrets.token_hex(4)}"
    assert sh("ip", "netns", "add", ns).returncode == 0
    net = subnet()
    host_ip, guest_ip = f"10.{net}.0.1", f"10.{net}.0.2"
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        cli(home, ns, "switch", "new", "lan", "--type", "internal")
        cli(home, ns, "switch", "set-ip", "lan", f"{host_ip}/24")
        # dnsmasq on the switch: the victim of forged DHCP requests (its log names every chaddr)
        cli(home, ns, "nat", "new", "out", "--switch", "lan", "--prefix", f"10.{net}.0.0/24", "--dhcp")
        dhcp_log = next((home / "net").glob("dnsmasq-*.log"))
        cli(home, ns, "vm", "new", "evil", "--image", "nested-host", "--memory", "512M", "--switch", "lan",
            "--append", f"nestor.ip={guest_ip}/24 nestor.gw={host_ip}")
        cli(home, ns, "vm", "start", "evil")
        wait_for_text(vm_dir(home, "evil") / paths.SERIAL_LOG, L1_BOOT_LINE, timeout=240)
        tap = as_json(home, ns, "adapter", "list", "evil")[0]["tap"]  # type: ignore[index]
        assert sysctl(ns, f"net.ipv6.conf.{tap}.disable_ipv6") == "1"
        assert reachable(ns, guest_ip)
        before = host_view(ns)
        start = counters(ns, home)
        assert start and not any(start.values()), start

        def send(rounds: int = 5, only: str = "") -> None:
            out = nestor(home, "vm", "exec", "--timeout", "120", "evil", "--", "python3", "-c", FRAMES.read_text(),
                         guest_ip, host_ip, str(rounds), *([only] if only else []), netns=ns, timeout=200).stdout
            assert ("sent " if only else "sent router") in out, out

        def dropped(kind: str) -> int:
            return counters(ns, home)[names.counter_name(kind, tap)]

        send()
        got = counters(ns, home)
        for kind in names.GUARD_KINDS:
            assert got[names.counter_name(kind, tap)] > 0, (kind, got)
        # A rogue offer from a non-standard source port (issue 18): every one is dropped.
        held = dropped("dhcp")
        send(4, "offer-6767")
        assert dropped("dhcp") == held + 4
        # A discover from the right MAC naming another one as BOOTP chaddr never reaches dnsmasq.
        held = dropped("mac")
        send(4, "chaddr")
        assert dropped("mac") == held + 4
        assert "52:54:00:de:ad:01" not in dhcp_log.read_text()
        assert host_view(ns) == before
        neigh = sh("ip", "-n", ns, "neigh").stdout
        assert "52:54:00:de:ad:01" not in neigh, neigh
        assert "2001:db8:77" not in sh("ip", "-n", ns, "-6", "addr").stdout
        assert "default" not in sh("ip", "-n", ns, "-6", "route").stdout
        # adapter list shows the totals per kind
        row = as_json(home, ns, "adapter", "list", "evil")[0]  # type: ignore[index]
        assert row["router_guard"] is True and row["dhcp_guard"] is True
        assert row["dropped_frames"] >= sum(got.values()) and row["dropped"]["router"] > 0

        # Guards off: the frames reach the host, and the bridge's own settings still refuse the
        # router advertisement (accept_ra=0, autoconf=0): no route, no address.
        cli(home, ns, "adapter", "set", "evil", "--router-guard", "off", "--dhcp-guard", "off", "--mac-spoofing", "on")
        held = counters(ns, home)
        send(3)
        assert counters(ns, home) == held  # nothing dropped any more ...
        wait_for_text(dhcp_log, "52:54:00:de:ad:01", timeout=30)  # (the forged chaddr now reaches dnsmasq)
        assert "2001:db8:77" not in sh("ip", "-n", ns, "-6", "addr").stdout  # ... and still nothing learnt
        assert "default" not in sh("ip", "-n", ns, "-6", "route").stdout
        assert host_view(ns)["routes"] == before["routes"]
    finally:
        reap_home(home)
        nestor(home, "nat", "remove", "out", netns=ns, check=False)
        for pidfile in (home / "net").glob("dnsmasq-*.pid"):
            dnsmasq.stop(pidfile)
        nestor(home, "switch", "remove", "lan", "--force", netns=ns, check=False)
        sh("ip", "netns", "del", ns)


def test_nothing_is_routed_into_a_switch_without_nat(home: Path, netns: NewNetns) -> None:
    """With forwarding on for a NAT, an outside host that routes to an internal switch's VM
    through our host still cannot reach it; the NAT switch's own VMs get out."""
    ns, outside = netns(), netns()
    iso, nat, up = subnet(), subnet(), subnet()
    sh("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", outside)
    sh("ip", "-n", ns, "addr", "add", f"172.31.{up}.1/24", "dev", "up0")
    sh("ip", "-n", ns, "link", "set", "up0", "up")
    sh("ip", "-n", outside, "addr", "add", f"172.31.{up}.2/24", "dev", "up1")
    sh("ip", "-n", outside, "link", "set", "up1", "up")
    sh("ip", "-n", outside, "link", "set", "lo", "up")
    assert sh("ip", "-n", outside, "route", "add", f"10.{iso}.0.0/24", "via", f"172.31.{up}.1").returncode == 0
    cli(home, ns, "switch", "new", "natsw", "--type", "internal")
    cli(home, ns, "switch", "set-ip", "natsw", f"192.168.{nat}.1/24")
    cli(home, ns, "nat", "new", "out", "--switch", "natsw", "--prefix", f"192.168.{nat}.0/24")
    cli(home, ns, "switch", "new", "iso", "--type", "internal")
    cli(home, ns, "switch", "set-ip", "iso", f"10.{iso}.0.1/24")
    assert sysctl(ns, "net.ipv4.ip_forward") == "1"
    boot(home, ns, "i", "echo up\n", f"nestor.ip=10.{iso}.0.2/24 nestor.gw=10.{iso}.0.1", "iso")
    assert reachable(ns, f"10.{iso}.0.2")  # the VM answers its host ...
    assert reachable(outside, f"172.31.{up}.1")  # ... the outside reaches the host ...
    assert not reachable(outside, f"10.{iso}.0.2")  # ... but is not routed into the switch
    drop = nsexec(ns, "nft", "list", "chain", "inet", names.nat_table(tag(home)), "forward").stdout
    assert f'oifname {{ "{names.bridge_name(tag(home), 1)}"' in drop, drop
    cli(home, ns, "vm", "remove", "i", "--force")
    cli(home, ns, "nat", "remove", "out")
    assert sysctl(ns, "net.ipv4.ip_forward") == "0"
    assert "nestor_ip_forward_was" not in nsexec(ns, "nft", "list", "tables").stdout  # the record went too


@pytest.mark.parametrize("found", ["0", "1"])
def test_nat_remove_restores_ip_forward_as_found(home: Path, netns: NewNetns, found: str) -> None:
    ns, net = netns(), subnet()
    nsexec(ns, "sysctl", "-q", "-w", f"net.ipv4.ip_forward={found}")
    cli(home, ns, "switch", "new", "sw", "--type", "internal")
    cli(home, ns, "switch", "set-ip", "sw", f"192.168.{net}.1/24")
    cli(home, ns, "nat", "new", "out", "--switch", "sw", "--prefix", f"192.168.{net}.0/24")
    assert sysctl(ns, "net.ipv4.ip_forward") == "1"
    assert f"nestor_ip_forward_was_{found}" in nsexec(ns, "nft", "list", "tables").stdout
    cli(home, ns, "nat", "remove", "out")
    assert sysctl(ns, "net.ipv4.ip_forward") == found
    assert "nestor_ip_forward_was" not in nsexec(ns, "nft", "list", "tables").stdout
