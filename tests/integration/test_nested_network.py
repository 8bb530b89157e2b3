"""The seed's two networking options for nested guests, proven with an L2 inside an L1.

L0: a test namespace with an internal switch 10.78.0.1/24 and l1 on it, MAC spoofing off (guard on).
Option 2 (NAT): inside l1, l1's nestor builds a NAT network with DHCP; l2 behind it reaches L0.
Option 1 (MAC spoofing): inside l1, an external switch bridges l1's eth0; l2 on it, with its own
MAC, reaches L0 only while l1's adapter allows MAC spoofing.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor.images.nested_host import BOOT_LINE
from tests.helpers import in_l1, nestor, reap_home, vm_dir, wait_for_text

pytestmark = [pytest.mark.vm, pytest.mark.nested]

L0 = "10.78.0.1"
PING_LOOP = f"""#!/bin/sh
while true; do
  if ping -c 1 -W 1 {L0} >/dev/null 2>&1; then echo "l2-ping: ok"; else echo "l2-ping: failed"; fi
  sleep 1
done
"""


@pytest.fixture(scope="module")
def net_l1(tmp_path_factory: pytest.TempPathFactory, nested_store: Path) -> Iterator[tuple[Path, str]]:
    home = tmp_path_factory.mktemp("netl1") / "home"
    home.mkdir()
    (home / "images").symlink_to(nested_store)
    ns = f"nt-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    try:
        nestor(home, "switch", "new", "sw", "--type", "internal", netns=ns)
        nestor(home, "switch", "set-ip", "sw", f"{L0}/24", netns=ns)
        nestor(home, "vm", "new", "l1", "--image", "nested-host", "--nested", "--memory", "1G", "--vcpus", "2",
               "--switch", "sw", "--append", "nestor.ip=10.78.0.2/24 nestor.gw=10.78.0.1", netns=ns)
        nestor(home, "vm", "start", "l1", netns=ns)
        wait_for_text(vm_dir(home, "l1") / "serial.log", BOOT_LINE, timeout=180)
        yield home, ns
    finally:
        reap_home(home)
        nestor(home, "switch", "remove", "sw", "--force", netns=ns, check=False)
        subprocess.run(["ip", "netns", "del", ns], timeout=30, check=False)



def put_script(home: Path, path: str, text: str) -> None:
    from nestor.service import guests
    from nestor.service.core import Core

    with guests.agent(Core(home), "l1", timeout=30) as agent:
        agent.write_file(path, text.encode())


def l2_pings(home: Path, name: str, after: int = 0, timeout: float = 60) -> tuple[str, int]:
    """The next ping verdict l2 prints after `after` verdicts, and the count so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = in_l1(home, "nestor", "vm", "log", name)
        verdicts = [line.split("l2-ping: ")[1].strip() for line in log.splitlines() if "l2-ping: " in line]
        if len(verdicts) > after:
            return verdicts[-1], len(verdicts)
        time.sleep(1)
    raise AssertionError(f"{name} printed no ping verdict")


def wait_verdict(home: Path, name: str, want: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        verdict, seen = l2_pings(home, name, seen)
        if verdict == want:
            return
    raise AssertionError(f"{name} never printed 'l2-ping: {want}'")


def test_option2_nat_in_l1_reaches_l0_with_guard_on(net_l1: tuple[Path, str]) -> None:
    home, ns = net_l1
    adapters = json.loads(nestor(home, "adapter", "list", "l1", "-o", "json", netns=ns).stdout)
    assert adapters[0]["mac_spoofing"] is False
    in_l1(home, "nestor", "switch", "new", "nat0", "--type", "internal")
    in_l1(home, "nestor", "switch", "set-ip", "nat0", "192.168.100.1/24")
    in_l1(home, "nestor", "nat", "new", "nat0", "--switch", "nat0", "--prefix", "192.168.100.0/24", "--dhcp")
    put_script(home, "/tmp/ping.sh", PING_LOOP)
    in_l1(home, "nestor", "vm", "new", "natl2", "--memory", "192M", "--switch", "nat0", "--append", "nestor.dhcp=1",
          "--run", "/tmp/ping.sh")
    in_l1(home, "nestor", "vm", "start", "natl2")
    wait_verdict(home, "natl2", "ok", timeout=150)
    leases = json.loads(in_l1(home, "nestor", "nat", "list", "-o", "json"))
    assert any("192.168.100." in json.dumps(n) for n in leases), leases
    in_l1(home, "nestor", "vm", "remove", "natl2", "--force")
    in_l1(home, "nestor", "nat", "remove", "nat0")
    in_l1(home, "nestor", "switch", "remove", "nat0")


@pytest.mark.timeout(900)
def test_option1_bridged_l2_needs_mac_spoofing(net_l1: tuple[Path, str]) -> None:
    home, ns = net_l1
    # eth0 carries l1's address and default route: they move onto the switch with it.
    in_l1(home, "nestor", "switch", "new", "ext0", "--type", "external", "--uplink", "eth0", "--move-addresses")
    put_script(home, "/tmp/ping.sh", PING_LOOP)
    in_l1(home, "nestor", "vm", "new", "brl2", "--memory", "192M", "--switch", "ext0",
          "--append", "nestor.ip=10.78.0.3/24", "--run", "/tmp/ping.sh")
    # A cold nestor CLI in l1 starting an L2 and waiting for its boot, all under TCG: minutes on
    # a slow or loaded machine (one full run went past 180 s).
    in_l1(home, "nestor", "vm", "start", "brl2", timeout=420)
    in_l1(home, "nestor", "vm", "log", "brl2", "--until", "l2-ping: ", "--timeout", "150", timeout=200)
    # Guard on at L0: l2's frames carry a MAC that is not l1's adapter's, so they are dropped.
    verdict, seen = l2_pings(home, "brl2")
    verdict, seen = l2_pings(home, "brl2", seen)
    assert verdict == "failed"
    nestor(home, "adapter", "set", "l1", "--mac-spoofing", "on", netns=ns)
    wait_verdict(home, "brl2", "ok")
    nestor(home, "adapter", "set", "l1", "--mac-spoofing", "off", netns=ns)
    wait_verdict(home, "brl2", "failed")
    dropped = json.loads(nestor(home, "adapter", "list", "l1", "-o", "json", netns=ns).stdout)[0]
    assert (dropped["dropped_frames"] or 0) > 0, dropped
