"""Switches, adapters, the MAC guard (R8) and NAT (R9) on the real kernel, with real VMs.

Binding safety rules (FACTS.md): everything lives in network namespaces this test made
(`ip netns add nt-<random>`), nestor always gets --netns, traffic only goes to our own
namespaces and VMs, and the finalizers end every QEMU and dnsmasq by PID and delete the
namespaces, also when a test fails.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nestor import paths
from nestor.engine import process
from nestor.images.appliance import BOOT_LINE
from nestor.net import dnsmasq, names
from tests.helpers import nestor, reap_home, vm_dir, wait_for_text

pytestmark = pytest.mark.vm

NewNetns = Callable[[], str]


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def netns(home: Path) -> Iterator[NewNetns]:
    yield from netns_maker(home)


def netns_maker(home: Path) -> Iterator[NewNetns]:
    """Makes test namespaces on demand; afterwards ends our QEMUs and dnsmasqs, deletes them."""
    made: list[str] = []

    def new() -> str:
        name = f"nt-{secrets.token_hex(4)}"
        assert sh("ip", "netns", "add", name).returncode == 0
        made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        # A new namespace copies IPv4 forwarding from the root one (devconf_inherit_init_net=0), which is 1
        # on hosts that route (Docker's, say): the tests start from a namespace that does not forward.
        sh("ip", "netns", "exec", name, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        return name

    try:
        yield new
    finally:
        reap_home(home)
        for pidfile in (home / "net").glob("dnsmasq-*.pid"):
            dnsmasq.stop(pidfile)
        for name in made:
            sh("ip", "netns", "del", name)


def guard_table(home: Path) -> str:
    return names.guard_table(names.home_tag(home))


def nat_table(home: Path) -> str:
    return names.nat_table(names.home_tag(home))


def is_dnsmasq(pid: int) -> bool:
    try:
        return b"dnsmasq" in Path(f"/proc/{pid}/cmdline").read_bytes()  # a zombie's is empty
    except OSError:
        return False


def subnet() -> int:
    return 16 + secrets.randbelow(200)


def cli(home: Path, ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return nestor(home, *args, netns=ns, check=check)


def as_json(home: Path, ns: str, *args: str) -> object:
    return json.loads(cli(home, ns, *args, "-o", "json").stdout)


def boot(home: Path, ns: str, name: str, script: str, append: str, *switches: str) -> Path:
    run = home / f"{name}.sh"
    run.write_text("#!/bin/sh\n" + script)
    extra = [arg for sw in switches for arg in ("--switch", sw)]
    cli(home, ns, "vm", "new", name, "--run", str(run), "--memory", "256M", "--append", append, *extra)
    cli(home, ns, "vm", "start", name)
    directory = vm_dir(home, name)
    wait_for_text(directory / paths.SERIAL_LOG, BOOT_LINE)
    return directory


def dropped(home: Path, ns: str, vm: str) -> int:
    rows = as_json(home, ns, "adapter", "list", vm)
    assert isinstance(rows, list)
    return int(rows[0]["dropped_frames"])


def rounds(log: Path, kind: str) -> list[int]:
    return [int(n) for n in re.findall(rf"mv0-ping={kind} (\d+)", log.read_text(errors="replace"))]


def wait_round(log: Path, kind: str, after: int, timeout: float = 60) -> int:
    """The first guest ping round of ``kind`` (ok | fail) numbered above ``after``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = [n for n in rounds(log, kind) if n > after]
        if later:
            return min(later)
        time.sleep(0.2)
    raise AssertionError(f"no mv0-ping={kind} after round {after}:\n{log.read_text(errors='replace')[-2000:]}")


def last_round(log: Path) -> int:
    return max(rounds(log, "ok") + rounds(log, "fail") + [-1])


GUARD_SCRIPT = """\
if ping -c 3 -W 2 {gw} >/dev/null 2>&1; then echo "eth0-ping=ok"; else echo "eth0-ping=fail"; fi
# A second MAC from inside the VM: the guard must drop it unless spoofing is allowed.
ip link add link eth0 name mv0 type macvlan
ip link set dev mv0 address 52:54:00:de:ad:01
ip addr add {spoof_ip}/24 dev mv0
ip link set mv0 up
i=0
while true; do
    if ping -c 1 -W 1 -I mv0 {gw} >/dev/null 2>&1; then echo "mv0-ping=ok $i"; else echo "mv0-ping=fail $i"; fi
    i=$((i + 1))
    sleep 0.3
done
"""


def test_internal_switch_ping_and_mac_guard(home: Path, netns: NewNetns) -> None:
    ns, net = netns(), subnet()
    gw = f"10.{net}.0.1"
    cli(home, ns, "switch", "new", "lan", "--type", "internal")
    cli(home, ns, "switch", "set-ip", "lan", f"{gw}/24")
    shown = as_json(home, ns, "switch", "show", "lan")
    assert isinstance(shown, dict) and shown["state"] == "up" and shown["host_addresses"] == [f"{gw}/24"]

    script = GUARD_SCRIPT.format(gw=gw, spoof_ip=f"10.{net}.0.3")
    directory = boot(home, ns, "g", script, f"nestor.ip=10.{net}.0.2/24 nestor.gw={gw}", "lan")
    log = directory / paths.SERIAL_LOG
    text = wait_for_text(log, "eth0-ping=")
    assert "eth0-ping=ok" in text, text[-2000:]
    adapters = as_json(home, ns, "adapter", "list", "g")
    assert isinstance(adapters, list) and len(adapters) == 1
    tap, mac = adapters[0]["tap"], adapters[0]["mac"]
    assert adapters[0]["mac_spoofing"] is False and re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", mac)
    assert shown["bridge"] in sh("ip", "-n", ns, "link", "show", tap).stdout  # the tap is a port of the bridge
    argv = json.loads((directory / "launch.json").read_text())["argv"]
    assert any(re.fullmatch(r"tap,id=net0,fd=\d+", arg) for arg in argv), argv  # QEMU got the tap's descriptor

    # Guard on (the default): the macvlan's frames are dropped, and the counter says so.
    wait_round(log, "fail", -1)
    wait_round(log, "fail", last_round(log))
    assert not rounds(log, "ok")
    before = dropped(home, ns, "g")
    assert before > 0

    # Spoofing on while the VM runs: the rule goes at once and the pings pass.
    cli(home, ns, "adapter", "set", "g", "--mac-spoofing", "on")
    assert "mac_nst" not in sh("ip", "netns", "exec", ns, "nft", "list", "chain", "bridge", guard_table(home),
                             "prerouting").stdout
    ok = wait_round(log, "ok", last_round(log))
    wait_round(log, "ok", ok)

    # Off again: dropped again, and the counter (carried over the re-render) rises.
    held = dropped(home, ns, "g")
    assert held >= before
    cli(home, ns, "adapter", "set", "g", "--mac-spoofing", "off")
    fail = wait_round(log, "fail", last_round(log))
    wait_round(log, "fail", fail)
    assert dropped(home, ns, "g") > held

    # Stop: the tap goes; remove: the guard loses its rules, the table is gone.
    cli(home, ns, "vm", "stop", "g", "--turn-off")
    assert sh("ip", "-n", ns, "link", "show", tap).returncode != 0
    cli(home, ns, "vm", "remove", "g")
    assert sh("ip", "netns", "exec", ns, "nft", "list", "table", "bridge", guard_table(home)).returncode != 0
    cli(home, ns, "switch", "remove", "lan")
    assert sh("ip", "-n", ns, "link", "show", shown["bridge"]).returncode != 0


PRIVATE_SCRIPT = """\
if ping -c 2 -W 1 {host} >/dev/null 2>&1; then echo "host-ping=ok"; else echo "host-ping=fail"; fi
"""


def test_private_switch_and_taps_survive_a_killed_qemu(home: Path, netns: NewNetns) -> None:
    ns, net = netns(), subnet()
    host_ip = f"10.{net}.0.1"
    cli(home, ns, "switch", "new", "priv", "--type", "private")
    refused = cli(home, ns, "switch", "set-ip", "priv", f"{host_ip}/24", check=False)
    assert refused.returncode != 0 and "private" in refused.stderr
    directory = boot(home, ns, "p", PRIVATE_SCRIPT.format(host=host_ip), f"nestor.ip=10.{net}.0.2/24", "priv")
    text = wait_for_text(directory / paths.SERIAL_LOG, "host-ping=")
    assert "host-ping=fail" in text
    shown = as_json(home, ns, "switch", "show", "priv")
    assert isinstance(shown, dict) and shown["host_addresses"] == []
    tap = shown["adapters"][0]["tap"]
    assert shown["ports"] == [tap]
    stats = json.loads(sh("ip", "-n", ns, "-j", "-s", "link", "show", tap).stdout)[0]
    assert stats["stats64"]["rx"]["packets"] > 0  # the VM's ARP reached the switch; nobody answered

    # A killed QEMU leaves its persistent tap; the next start replaces it.
    pid = process.live_pid(directory)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    process.wait_exit(pid, 10)
    assert sh("ip", "-n", ns, "link", "show", tap).returncode == 0
    cli(home, ns, "vm", "start", "p")
    assert as_json(home, ns, "vm", "show", "p")["state"] == "running"  # type: ignore[index]

    # Stop and remove *without* --netns: the adapters table knows where the tap lives.
    nestor(home, "vm", "stop", "p", "--turn-off")
    assert sh("ip", "-n", ns, "link", "show", tap).returncode != 0
    nestor(home, "vm", "remove", "p")
    cli(home, ns, "switch", "remove", "priv")
    assert sh("ip", "-n", ns, "-j", "link").stdout.count(f"nsb{names.home_tag(home)}") == 0


NAT_SCRIPT = """\
for i in 1 2 3 4 5; do
    if ping -c 1 -W 2 {outside} >/dev/null 2>&1; then echo "outside-ping=ok"; exit 0; fi
done
echo "outside-ping=fail"
"""


DNS_QUERY = """
import random, socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
ident = random.randrange(65536)
query = struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + b"".join(
    bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
sock.sendto(query, (server, 53))
data = sock.recv(4096)
answers = struct.unpack("!H", data[6:8])[0]
at = len(query)  # past the header and the question (echoed as sent)
found = []
for _ in range(answers):
    at += 2 if data[at] & 0xC0 == 0xC0 else data.index(0, at) + 1 - at
    kind, _cls, _ttl, length = struct.unpack("!HHIH", data[at:at + 10])
    if kind == 1:
        found.append(socket.inet_ntoa(data[at + 10:at + 14]))
    at += 10 + length
print(" ".join(found) or "none")
"""


def resolve(ns: str, server: str, name: str) -> str:
    """An A query to ``server`` from inside ``ns``: the addresses, or 'none'."""
    import sys

    result = sh("ip", "netns", "exec", ns, sys.executable, "-c", DNS_QUERY, server, name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_nat_with_dhcp_reaches_another_namespace(home: Path, netns: NewNetns) -> None:
    ns, outside, net, up = netns(), netns(), subnet(), subnet()
    # The "outside": a veth from the host namespace into a second test namespace. It has no route
    # back to the NAT prefix, so a reply can only come if the host masqueraded.
    assert sh("ip", "-n", ns, "link", "add", "up0", "type", "veth", "peer", "name", "up1",
              "netns", outside).returncode == 0
    sh("ip", "-n", ns, "addr", "add", f"172.31.{up}.1/24", "dev", "up0")
    sh("ip", "-n", ns, "link", "set", "up0", "up")
    sh("ip", "-n", outside, "addr", "add", f"172.31.{up}.2/24", "dev", "up1")
    sh("ip", "-n", outside, "link", "set", "up1", "up")

    cli(home, ns, "switch", "new", "natsw", "--type", "internal")
    cli(home, ns, "switch", "set-ip", "natsw", f"192.168.{net}.1/24")
    cli(home, ns, "nat", "new", "out", "--switch", "natsw", "--prefix", f"192.168.{net}.0/24", "--dhcp")
    assert sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    overlap = cli(home, ns, "nat", "new", "again", "--switch", "natsw", "--prefix", f"192.168.{net}.0/25", check=False)
    assert overlap.returncode != 0 and "overlaps" in overlap.stderr

    directory = boot(home, ns, "d", NAT_SCRIPT.format(outside=f"172.31.{up}.2"), "nestor.dhcp=1", "natsw")
    text = wait_for_text(directory / paths.SERIAL_LOG, "outside-ping=")
    assert f"bound to 192.168.{net}." in text, text[-2000:]
    assert "outside-ping=ok" in text, text[-2000:]
    nats = as_json(home, ns, "nat", "list")
    assert isinstance(nats, list) and nats[0]["dnsmasq"].startswith("pid ")
    mac = as_json(home, ns, "adapter", "list", "d")[0]["mac"]  # type: ignore[index]
    assert [lease["mac"] for lease in nats[0]["leases"]] == [mac]
    # DNS (issue 18): the VM's own name, as nestor assigned it, resolves to its lease; nothing of
    # L0's /etc/hosts is served (it has "localhost" and this machine's names).
    assert resolve(ns, f"192.168.{net}.1", "d") == nats[0]["leases"][0]["ip"]
    assert resolve(ns, f"192.168.{net}.1", "localhost") == "none"

    pidfile = next((home / "net").glob("dnsmasq-*.pid"))
    pid = dnsmasq.live_pid(pidfile)
    assert pid is not None
    cli(home, ns, "vm", "remove", "d", "--force")
    cli(home, ns, "nat", "remove", "out")
    assert not pidfile.exists() and not is_dnsmasq(pid)
    assert sh("ip", "netns", "exec", ns, "nft", "list", "table", "inet", nat_table(home)).returncode != 0
    assert as_json(home, ns, "nat", "list") == []


def test_external_switch_enslaves_its_uplink(home: Path, netns: NewNetns) -> None:
    ns, other = netns(), netns()
    sh("ip", "-n", ns, "link", "add", "phys0", "type", "veth", "peer", "name", "phys1", "netns", other)
    cli(home, ns, "switch", "new", "ext", "--type", "external", "--uplink", "phys0")
    shown = as_json(home, ns, "switch", "show", "ext")
    assert isinstance(shown, dict) and shown["ports"] == ["phys0"] and shown["uplink"] == "phys0"
    again = cli(home, ns, "switch", "new", "ext2", "--type", "external", "--uplink", "phys0", check=False)
    assert again.returncode != 0 and "already a port" in again.stderr
    cli(home, ns, "switch", "remove", "ext")
    assert "master" not in sh("ip", "-n", ns, "link", "show", "phys0").stdout  # released, not deleted
    assert as_json(home, ns, "switch", "list") == []


def test_switch_remove_force_never_takes_a_running_or_saved_vms_adapter(home: Path, netns: NewNetns) -> None:
    """Hyper-V disconnects a removed switch's adapters; nestor's rule is that a running VM's tap
    is never deleted under it (and a saved VM needs its adapters to resume): `switch remove
    --force` is refused, naming those VMs, and then only removes adapters of VMs that are off."""
    ns = netns()
    cli(home, ns, "switch", "new", "sw", "--type", "private")
    (home / "idle.sh").write_text("#!/bin/sh\necho idle-up\n")
    for name in ("run", "sav", "off"):
        cli(home, ns, "vm", "new", name, "--run", str(home / "idle.sh"), "--memory", "128M", "--switch", "sw")
    cli(home, ns, "vm", "start", "run")
    cli(home, ns, "vm", "start", "sav")
    for name in ("run", "sav"):
        wait_for_text(vm_dir(home, name) / paths.SERIAL_LOG, "idle-up", timeout=180)
    cli(home, ns, "vm", "save", "sav")
    shown = as_json(home, ns, "switch", "show", "sw")
    assert isinstance(shown, dict)
    taps = {a["vm"]: a["tap"] for a in shown["adapters"]}
    running = process.live_pid(vm_dir(home, "run"))

    refused = cli(home, ns, "switch", "remove", "sw", "--force", check=False)
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "vm 'run' (running)" in lines[0] and "vm 'sav' (saved)" in lines[0]
    assert "vm 'off'" not in lines[0] and any(line.startswith("hint: ") for line in lines)
    assert sh("ip", "-n", ns, "link", "show", taps["run"]).returncode == 0  # the running VM's tap stays
    assert process.live_pid(vm_dir(home, "run")) == running
    after = as_json(home, ns, "switch", "show", "sw")
    assert isinstance(after, dict) and len(after["adapters"]) == 3  # nothing changed

    cli(home, ns, "vm", "stop", "run", "--turn-off")
    again = cli(home, ns, "switch", "remove", "sw", "--force", check=False)
    assert again.returncode != 0 and "vm 'sav' (saved)" in again.stderr and "'run'" not in again.stderr
    cli(home, ns, "vm", "start", "sav")  # the saved VM still resumes with its adapter
    assert as_json(home, ns, "vm", "show", "sav")["state"] == "running"  # type: ignore[index]
    cli(home, ns, "vm", "stop", "sav", "--turn-off")

    removed = cli(home, ns, "switch", "remove", "sw", "--force").stdout
    assert all(f"adapter {vm}/" in removed for vm in ("run", "sav", "off"))
    assert as_json(home, ns, "switch", "list") == []
    assert all(sh("ip", "-n", ns, "link", "show", tap).returncode != 0 for tap in taps.values())
