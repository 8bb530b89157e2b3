"""The cluster in a box (issue 12), on demand: `pytest -m cluster tests/integration/test_cluster.py`.

Two nestor L1s from the libvirt Debian image (tests/integration/libvirt_l1.py), each with libvirtd
on qemu+tcp bound to its address on one internal switch in the test's namespace. L0's nestor adds
both as hosts and:
- live-migrates a counting L2 (KVM inside the L1s) from A to B; the counter goes on;
- refuses to move an L2 in which a hypervisor runs (the L2's KVM runs a spinning L3), naming R12-R14,
  and moves it once that L3 is stopped;
- places a nested VM with `--host auto` on the host with the most free memory, and shows each
  host's reason when none has room.
It prints [measure] lines (boot, start, migration); docs/scale.md has the numbers. Not in CI: two
TCG L1s with KVM L2s inside take many minutes on a 2-core machine.
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import guest_home, nestor, reap_home, vm_dir, wait_for_text
from tests.integration import libvirt_l1 as lab_mod
from tests.integration.libvirt_l1 import L2_INITRD, L2_INITRD_KVM, L2_KERNEL, nestor_in, wait_until

pytestmark = [pytest.mark.vm, pytest.mark.nested, pytest.mark.cluster, pytest.mark.timeout(5400)]
COUNT = re.compile(r"nestor-l2: count (\d+)")
TICK = re.compile(r"nestor-l2: tick (\d+)")


@dataclass
class Cluster:
    home: Path
    netns: str
    addresses: dict[str, str]  # L1 name -> its switch address

    def cli(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return nestor(self.home, *args, netns=self.netns, **kw)

    def inside(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return nestor_in(self.netns, self.home, *args, **kw)

    def l1(self, name: str, *argv: str, check: bool = True, timeout: float = 900) -> str:
        result = self.cli("vm", "exec", "--timeout", str(timeout), name, "--", *argv, check=False, timeout=timeout + 60)
        if check:
            assert result.returncode == 0, f"{argv} in {name}: {result.returncode}\n{result.stdout}{result.stderr}"
        return result.stdout

    def counts(self, l1: str, domain: str, seconds: int = 6) -> list[int]:
        """The counts the L2 `domain` prints on its console (a pty of the L1's libvirt) for a while."""
        tty = self.l1(l1, "virsh", "ttyconsole", domain).strip()
        out = self.l1(l1, "timeout", str(seconds), "cat", tty, check=False)
        return [int(n) for n in COUNT.findall(out)]

    def follow_console(self, l1: str, domain: str, path: str) -> None:
        """Copy the L2's console (a pty: what nobody reads is lost) into `path` in the L1, in the
        background; the pty raw and without echo (an echo would feed the L2 its own output)."""
        tty = self.l1(l1, "virsh", "ttyconsole", domain).strip()
        self.l1(l1, "sh", "-c", 'stty -F "$1" raw -echo && (setsid timeout 3600 cat "$1" > "$2" 2>&1 < /dev/null &)',
                "sh", tty, path)

    def ticks(self, l1: str, domain: str, seconds: int = 8) -> list[int]:
        """The ticks an l3ctl L2 prints on its console for a while."""
        tty = self.l1(l1, "virsh", "ttyconsole", domain).strip()
        out = self.l1(l1, "sh", "-c", 'stty -F "$1" raw -echo && timeout "$2" cat "$1"', "sh", tty, str(seconds),
                      check=False)
        return [int(n) for n in TICK.findall(out)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    images = lab_mod.prepared_images()
    work = tmp_path_factory.mktemp("cluster")
    home = guest_home(work / "home", images)
    netns = f"nt-{secrets.token_hex(4)}"
    subnet = f"10.{80 + secrets.randbelow(40)}.{secrets.randbelow(250)}"
    addresses = {"hv-a": f"{subnet}.10", "hv-b": f"{subnet}.11"}
    memory = {"hv-a": "1536M", "hv-b": "3G"}  # B has the room for the placement test
    assert lab_mod.sh("ip", "netns", "add", netns).returncode == 0
    lab_mod.sh("ip", "-n", netns, "link", "set", "lo", "up")
    try:
        cli = functools.partial(nestor, home, netns=netns)
        cli("switch", "new", "sw", "--type", "internal")
        cli("switch", "set-ip", "sw", f"{subnet}.1/24")
        initrd = lab_mod.l2_initramfs(work)
        started = time.monotonic()
        for name, address in addresses.items():
            seed = work / f"{name}.user-data"
            seed.write_text(lab_mod.user_data(address, initrd, l2_names=()))
            lab_mod.new_l1(cli, name, address, f"{subnet}.1", seed, memory=memory[name])
            cli("vm", "start", name)
        for name in addresses:
            wait_for_text(vm_dir(home, name) / "serial.log", lab_mod.READY_LINE, timeout=lab_mod.BOOT_TIMEOUT)
            print(f"[measure] {name} ready {time.monotonic() - started:.1f} s after both started", file=sys.stderr)
            wait_until(f"{name}'s agent", lambda n=name: cli("vm", "exec", n, "true", check=False).returncode == 0, 180)
        box = Cluster(home, netns, addresses)
        for name, address in addresses.items():
            box.inside("host", "add", name, f"qemu+tcp://{address}/system")
        yield box
    finally:
        reap_home(home)
        lab_mod.sh("ip", "netns", "del", netns)


def test_hosts_offer_nesting(cluster: Cluster) -> None:
    hosts = {h["name"]: h for h in json.loads(cluster.inside("host", "list", "-o", "json").stdout)}
    assert set(hosts) == {"hv-a", "hv-b"}
    for host in hosts.values():
        assert host["reachable"] and host["virt_type"] == "kvm" and host["nesting"] is True, host


def test_live_migration_keeps_the_counter(cluster: Cluster) -> None:
    started = time.monotonic()
    cluster.inside("vm", "new", "counter", "--host", "hv-a", "--memory", "128M", "--kernel", L2_KERNEL,
                   "--initrd", L2_INITRD, "--append", "console=ttyS0 quiet count")
    cluster.inside("vm", "start", "counter")
    before = wait_until("the counter counts on hv-a", lambda: cluster.counts("hv-a", "counter"), 300, 0)
    print(f"[measure] counter L2: new + start to counting on hv-a: {time.monotonic() - started:.1f} s", file=sys.stderr)
    started = time.monotonic()
    moved = cluster.inside("vm", "move", "counter", "--host", "hv-b", timeout=900)
    took = time.monotonic() - started
    print(f"[measure] live migration of a 128 MiB KVM L2 between two TCG L1s: {took:.1f} s", file=sys.stderr)
    assert "moved to host 'hv-b' (live)" in moved.stdout, moved
    after = wait_until("the counter counts on hv-b", lambda: cluster.counts("hv-b", "counter"), 120, 0)
    assert min(after) > max(before), (before, after)  # it went on; a restart would count from 1
    assert "counter" not in cluster.l1("hv-a", "virsh", "list", "--all", "--name")
    info = json.loads(cluster.inside("vm", "show", "counter", "-o", "json").stdout)
    assert info["host"] == "hv-b" and info["state"] == "running"
    tree = json.dumps(json.loads(cluster.inside("tree", "-o", "json").stdout))
    assert "hv-a" in tree and "hv-b" in tree and '"counter"' in tree


def test_move_refused_while_a_hypervisor_runs_inside(cluster: Cluster) -> None:
    """A real hypervisor in the L2: its KVM runs an L3 (data/l2init.c, mode l3ctl). nestor reads
    it through libvirt (query-stats guest_mode) and refuses the move naming R12-R14; once the L3
    is stopped (the L2 keeps running), the same move is allowed and the L2 goes on on hv-b."""
    hosts = {h["name"]: h for h in json.loads(cluster.inside("host", "list", "-o", "json").stdout)}
    module = {"svm": "kvm_amd", "vmx": "kvm_intel"}[hosts["hv-a"]["nesting_flag"]]
    nested_param = cluster.l1("hv-a", "cat", f"/sys/module/{module}/parameters/nested").strip()
    assert nested_param in ("1", "Y"), f"hv-a's {module} nested={nested_param}: the L1 offers no nesting"
    started = time.monotonic()
    cluster.inside("vm", "new", "nested", "--host", "hv-a", "--nested", "--memory", "256M", "--kernel", L2_KERNEL,
                   "--initrd", L2_INITRD_KVM, "--append", "console=ttyS0 quiet l3ctl")
    offered = cluster.l1("hv-a", "virsh", "dumpxml", "nested")
    flag = hosts["hv-a"]["nesting_flag"]
    assert re.search(rf"<feature policy='require' name='{flag}'/>|mode='host-passthrough'", offered), offered
    cluster.inside("vm", "start", "nested")
    log = "/run/nestor-test-nested.console"
    cluster.follow_console("hv-a", "nested", log)  # before the L2's init runs (its kernel boots first)
    wait_until("an L3 spins inside the L2",
               lambda: "an L3 spins" in cluster.l1("hv-a", "cat", log, check=False), 900, 3)
    print(f"[measure] nested L2: new + start to an L3 under its KVM on hv-a: {time.monotonic() - started:.1f} s",
          file=sys.stderr)

    def show() -> dict[str, Any]:
        return dict(json.loads(cluster.inside("vm", "show", "nested", "-o", "json").stdout))

    seen = wait_until("nestor sees a hypervisor running in the L2", lambda: show()["hypervisor_running"], 300, 1)
    info = show()
    assert info["hypervisor_running"] is True, info
    print(f"[measure] detection: {info['hypervisor_detection']}", file=sys.stderr)
    assert seen and "guest_mode = 1" in str(info["hypervisor_detection"]), info
    started = time.monotonic()
    refused = cluster.inside("vm", "move", "nested", "--host", "hv-b", check=False, timeout=300)
    print(f"[measure] refused move (CLI run): {time.monotonic() - started:.1f} s", file=sys.stderr)
    assert refused.returncode == 5 and "R12-R14" in refused.stderr and "hint: " in refused.stderr, refused
    assert refused.stderr.startswith("error: "), refused.stderr
    info = show()
    assert info["host"] == "hv-a" and info["state"] == "running", info
    assert "nested" in cluster.l1("hv-a", "virsh", "list", "--name")

    # The hypervisor stops (the L2 keeps running): the move is allowed again.
    tty = cluster.l1("hv-a", "virsh", "ttyconsole", "nested").strip()
    cluster.l1("hv-a", "sh", "-c", 'printf "nestor-stop-l3\\n" > "$1"', "sh", tty)
    wait_until("the L2 says its L3 stopped",
               lambda: "the L3 stopped" in cluster.l1("hv-a", "cat", log, check=False), 300, 2)
    wait_until("nestor sees no hypervisor in the L2", lambda: show()["hypervisor_running"] is False, 300, 2)
    before = [int(n) for n in TICK.findall(cluster.l1("hv-a", "cat", log, check=False))]
    started = time.monotonic()
    moved = cluster.inside("vm", "move", "nested", "--host", "hv-b", timeout=900)
    took = time.monotonic() - started
    print(f"[measure] live migration of a 256 MiB nested KVM L2 (L3 stopped): {took:.1f} s", file=sys.stderr)
    assert "moved to host 'hv-b' (live)" in moved.stdout, moved
    after = wait_until("the L2 ticks on hv-b", lambda: cluster.ticks("hv-b", "nested"), 180, 0)
    assert before and min(after) > max(before), (before, after)  # the same L2 went on; a restart starts at 1
    info = show()
    assert info["host"] == "hv-b" and info["state"] == "running", info
    cluster.inside("vm", "stop", "nested", "--turn-off")
    cluster.inside("vm", "remove", "nested")


def test_placement_picks_the_host_with_room(cluster: Cluster) -> None:
    hosts = {h["name"]: h for h in json.loads(cluster.inside("host", "list", "-o", "json").stdout)}
    free = {name: int(h["free_memory"]) for name, h in hosts.items()}
    assert all(h["nesting"] for h in hosts.values()), hosts
    roomiest = max(free, key=lambda name: free[name])
    assert abs(free["hv-a"] - free["hv-b"]) > 256 << 20, free  # L1s of 1.5 and 3 GiB: the choice is clear
    started = time.monotonic()
    placed = cluster.inside("vm", "new", "big", "--host", "auto", "--nested", "--memory", "512M")
    print(f"[measure] placement over 2 real hosts (CLI run): {time.monotonic() - started:.1f} s", file=sys.stderr)
    print(f"[measure] free memory: {free}; {placed.stdout.strip()}", file=sys.stderr)
    assert f"placed on host '{roomiest}'" in placed.stdout and "most free memory" in placed.stdout, placed.stdout
    assert json.loads(cluster.inside("vm", "show", "big", "-o", "json").stdout)["host"] == roomiest == "hv-b"
    cluster.inside("vm", "remove", "big")

    # No host has room: refused, each host with its reason, nothing defined.
    none = cluster.inside("vm", "new", "huge", "--host", "auto", "--nested", "--memory", "64G", check=False)
    assert none.returncode != 0 and none.stderr.startswith("error: no host can take a nested-enabled VM"), none
    assert "hv-a: only" in none.stderr and "hv-b: only" in none.stderr and "hint: " in none.stderr, none.stderr
    print(f"[measure] no room: {none.stderr.strip()}", file=sys.stderr)
    listed = cluster.inside("vm", "list", "-o", "json").stdout
    assert '"huge"' not in listed, listed
