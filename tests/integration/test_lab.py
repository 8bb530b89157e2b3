"""Labs (issue 17) on real QEMU, bridges, nft and dnsmasq: `lab plan`, `up`, `up` again, `status`,
`inventory` and `down` of a one-level lab (two appliance VMs on an internal switch with a NAT) at L0,
inside a network namespace this test made (tests/integration/test_network.py's fixtures)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor import paths
from nestor.service import Service
from tests.helpers import nestor, vm_dir, wait_for_text
from tests.integration.test_network import NewNetns, netns_maker, subnet

pytestmark = pytest.mark.vm


@pytest.fixture
def netns(home: Path) -> Iterator[NewNetns]:
    yield from netns_maker(home)


def lab_text(net: int) -> str:
    return f"""\
name: pair
switches:
  lan: {{type: internal, address: 10.{net}.0.1/24}}
nats:
  lan: {{switch: lan, prefix: 10.{net}.0.0/24, dhcp: true}}
vms:
  a:
    memory: 256M
    adapters: [{{switch: lan, ip: 10.{net}.0.11/24}}]
    run: |
      #!/bin/sh
      ip -4 addr show eth0 | grep inet
      echo "lab-a: up"
  b:
    memory: 256M
    adapters: [{{switch: lan, dhcp: true}}]
    run: |
      #!/bin/sh
      for _ in $(seq 60); do
        if ping -c 1 -W 2 10.{net}.0.11 >/dev/null; then echo "lab-ping: ok"; exit 0; fi
      done
      echo "lab-ping: failed"
"""


def _the_report_is_the_lists(home: Path, ns: str) -> None:
    """GET /v1/level's one answer (what the plan reads) says what the four lists say."""
    with Service(home, ns) as s:
        report = s.level_report()
        assert [vm.name for vm in report.vms] == [vm.name for vm in s.vm_list()] == ["a", "b"]
        assert {(w.name, w.type, w.address) for w in report.switches} == {
            (w.name, w.type.value, w.address) for w in s.switch_list()}
        assert [(a.vm, a.name, a.switch, a.mac, a.mac_spoofing) for a in report.adapters] == [
            (a.vm, a.name, a.switch, a.mac, a.mac_spoofing) for vm in ("a", "b") for a in s.adapter_list(vm)]
        listed = s.nat_list()
        assert [(n.name, n.prefix, n.dhcp, n.dnsmasq_pid, n.leases) for n in report.nats] == [
            (n.name, n.prefix, n.dhcp, n.dnsmasq_pid, n.leases) for n in listed]
        assert listed[0].dnsmasq_pid is not None


def _a_dead_dnsmasq_is_planned_then_started(home: Path, ns: str, lab: Path) -> None:
    """The plan reports a NAT whose dnsmasq died and repairs nothing; `lab up` starts it again."""
    with Service(home, ns) as s:
        pid = s.nat_list()[0].dnsmasq_pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # this test's own dnsmasq (made by its lab, in its namespace)
    deadline = time.monotonic() + 60
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    planned = json.loads(nestor(home, "lab", "plan", str(lab), "-o", "json", netns=ns).stdout)
    changes = [(a["kind"], a["name"], a["op"]) for a in planned["actions"] if a["op"] != "keep"]
    assert changes == [("nat", "lan", "change")], planned
    with Service(home, ns) as s:
        assert s.level_report().nats[0].dnsmasq_pid is None  # the plan started nothing
    up = nestor(home, "lab", "up", str(lab), netns=ns, timeout=300)
    assert "1 change made" in up.stdout, up.stdout + up.stderr
    with Service(home, ns) as s:
        assert s.level_report().nats[0].dnsmasq_pid not in (None, pid)
    again = nestor(home, "lab", "up", str(lab), netns=ns)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr


def test_lab_plan_up_again_status_inventory_down(home: Path, netns: NewNetns, tmp_path: Path) -> None:
    ns = netns()
    net = subnet()
    lab = tmp_path / "pair.lab.yaml"
    lab.write_text(lab_text(net))

    def cli(*args: str, check: bool = True) -> object:
        return nestor(home, *args, netns=ns, timeout=300, check=check)

    # a switch that is not the lab's: the lab must leave it alone
    cli("switch", "new", "keep0", "--type", "private")

    planned = json.loads(nestor(home, "lab", "plan", str(lab), "-o", "json", netns=ns).stdout)
    ops = {(a["level"], a["kind"], a["name"]): a["op"] for a in planned["actions"]}
    assert ops == {("", "switch", "lan"): "create", ("", "nat", "lan"): "create",
                   ("", "vm", "a"): "create", ("", "vm", "b"): "create"}
    assert planned["problems"] == []
    listed = json.loads(nestor(home, "vm", "list", "-o", "json").stdout)
    assert listed == []  # plan changed nothing

    up = nestor(home, "lab", "up", str(lab), netns=ns, timeout=300)
    assert "4 changes made" in up.stdout, up.stdout + up.stderr
    assert "a: started" in up.stderr and "b: started" in up.stderr  # progress per VM

    # the VMs are real: b got a lease from the lab's NAT and reached a over the lab's switch
    a_log = wait_for_text(vm_dir(home, "a") / paths.SERIAL_LOG, "lab-a: up", timeout=180)
    assert f"inet 10.{net}.0.11/24" in a_log
    b_log = wait_for_text(vm_dir(home, "b") / paths.SERIAL_LOG, "lab-ping: ", timeout=180)
    assert "lab-ping: ok" in wait_for_text(vm_dir(home, "b") / paths.SERIAL_LOG, "lab-ping: ", timeout=180), (b_log, a_log)

    again = nestor(home, "lab", "up", str(lab), netns=ns)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    _the_report_is_the_lists(home, ns)
    _a_dead_dnsmasq_is_planned_then_started(home, ns, lab)

    status = json.loads(nestor(home, "lab", "status", "pair", "-o", "json").stdout)
    vms = {vm["name"]: vm for vm in status["levels"][0]["vms"]}
    assert vms["a"]["state"] == vms["b"]["state"] == "running"
    assert vms["a"]["addresses"] == [f"10.{net}.0.11"]
    assert len(vms["b"]["addresses"]) == 1 and vms["b"]["addresses"][0].startswith(f"10.{net}.0.")
    assert [lab_row["name"] for lab_row in json.loads(nestor(home, "lab", "list", "-o", "json").stdout)] == ["pair"]

    inventory = json.loads(nestor(home, "lab", "inventory", "pair", "-o", "ansible").stdout)
    assert inventory["_meta"]["hostvars"]["a"]["ansible_host"] == f"10.{net}.0.11"
    assert inventory["_meta"]["hostvars"]["b"]["ansible_host"] == vms["b"]["addresses"][0]

    down = nestor(home, "lab", "down", "pair")
    assert "removed 4 objects" in down.stdout
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
    switches = json.loads(nestor(home, "switch", "list", "-o", "json", netns=ns).stdout)
    assert [s["name"] for s in switches] == ["keep0"]
    assert json.loads(nestor(home, "nat", "list", "-o", "json", netns=ns).stdout) == []
    assert json.loads(nestor(home, "lab", "list", "-o", "json").stdout) == []


def test_a_refused_preflight_creates_nothing(home: Path, netns: NewNetns, tmp_path: Path) -> None:
    ns = netns()
    lab = tmp_path / "big.lab.yaml"
    lab.write_text("name: big\nvms:\n  a: {memory: 64T}\n  b: {cpus: 999}\n")
    result = nestor(home, "lab", "up", str(lab), netns=ns, check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: preflight refused (2 problems): ") and lines[1].startswith("hint: ")
    assert "vms 'a' (65536G), 'b' (512M) at L0" in lines[0] and "vm 'b' at L0" in lines[0]  # every blocking VM
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
    assert json.loads(nestor(home, "lab", "list", "-o", "json").stdout) == []


ONE = """\
name: one
switches:
  lan: {{type: internal, address: 10.{net}.0.1/24}}
nats:
  lan: {{switch: lan, prefix: 10.{net}.0.0/24, dhcp: true}}
vms:
  a: {{memory: 256M, adapters: [{{switch: lan, ip: 10.{net}.0.11/24}}]}}
"""


@pytest.mark.parametrize("point", ["lab-up:after-claim", "lab-up:after-network", "vm-new:before-commit",
                                   "vm-start:after-spawn"])
def test_lab_up_killed_at_any_point_converges_on_the_next_run(home: Path, netns: NewNetns, tmp_path: Path,
                                                              point: str) -> None:
    import os
    import signal
    import subprocess
    import sys

    from nestor import faults

    assert point in faults.POINTS
    ns = netns()
    lab = tmp_path / "one.lab.yaml"
    lab.write_text(ONE.format(net=subnet()))
    argv = [sys.executable, "-m", "nestor", "--home", str(home), "--netns", ns, "lab", "up", str(lab)]
    killed = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, faults.ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    nestor(home, "lab", "up", str(lab), netns=ns, timeout=300)
    assert "nothing to do" in nestor(home, "lab", "up", str(lab), netns=ns).stdout
    vms = {vm["name"]: vm["state"] for vm in json.loads(nestor(home, "vm", "list", "-o", "json").stdout)}
    assert vms == {"a": "running"}
    nestor(home, "lab", "down", "one")
    # nothing leaked: no VM, switch, NAT or lab record; the NAT's table and dnsmasq went with it
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
    assert json.loads(nestor(home, "switch", "list", "-o", "json", netns=ns).stdout) == []
    assert json.loads(nestor(home, "nat", "list", "-o", "json", netns=ns).stdout) == []
    assert json.loads(nestor(home, "lab", "list", "-o", "json").stdout) == []
    assert list((home / "net").glob("dnsmasq-*.pid")) == []


COUNTER = """\
      #!/bin/sh
      boot=$(cat /proc/sys/kernel/random/boot_id)
      n=0
      while :; do n=$((n+1)); echo "tick $boot $n"; sleep 1; done
"""

SAVE = """\
name: counters
switches:
  lan: {{type: internal, address: 10.{net}.0.1/24}}
vms:
  c1:
    memory: 256M
    adapters: [{{switch: lan, ip: 10.{net}.0.11/24}}]
    run: |
{counter}  c2:
    memory: 256M
    adapters: [{{switch: lan, ip: 10.{net}.0.12/24}}]
    run: |
{counter}"""


def ticks(text: str) -> list[tuple[str, int]]:
    """The counter's lines: (boot id, number)."""
    import re

    return [(m.group(1), int(m.group(2))) for m in re.finditer(r"^tick (\S+) (\d+)\r?$", text, re.M)]


def test_lab_save_and_restore_keep_the_counters_going(home: Path, netns: NewNetns, tmp_path: Path) -> None:
    """Every VM of the lab is saved (QEMU gone, state 'saved'); after `lab restore` each guest's
    counter goes on from the number it had reached, with the same boot id: resumed, not rebooted."""
    import time

    ns = netns()
    lab = tmp_path / "counters.lab.yaml"
    lab.write_text(SAVE.format(net=subnet(), counter=COUNTER))
    nestor(home, "lab", "up", str(lab), netns=ns, timeout=300)
    logs = {name: vm_dir(home, name) / paths.SERIAL_LOG for name in ("c1", "c2")}
    for log in logs.values():
        wait_for_text(log, " 3\n", timeout=180)

    saved = nestor(home, "lab", "save", "counters", timeout=300)
    assert "saved 2 VMs" in saved.stdout, saved.stdout + saved.stderr
    states = {vm["name"]: vm["state"] for vm in json.loads(nestor(home, "vm", "list", "-o", "json").stdout)}
    assert states == {"c1": "saved", "c2": "saved"}
    again = nestor(home, "lab", "save", "counters")
    assert "nothing running to save" in again.stdout

    before = {}
    for name, log in logs.items():
        seen = ticks(log.read_text(errors="replace"))
        assert seen and len(seen[-1][0]) == 36, seen[-3:]  # a boot id
        before[name] = (seen[-1], log.stat().st_size)
    time.sleep(3)  # saved: nothing counts meanwhile
    for name, log in logs.items():
        assert log.stat().st_size == before[name][1]

    restored = nestor(home, "lab", "restore", "counters", timeout=300)
    assert "restored 2 VMs" in restored.stdout, restored.stdout + restored.stderr
    for name, log in logs.items():
        (boot, last), offset = before[name]
        deadline = time.monotonic() + 120
        after: list[tuple[str, int]] = []
        while len(after) < 3:
            assert time.monotonic() < deadline, (name, log.read_text(errors="replace")[-2000:])
            time.sleep(1)
            after = ticks(log.read_bytes()[offset:].decode(errors="replace"))
        assert all(b == boot for b, _ in after), (name, boot, after)  # the same boot: no reboot
        numbers = [n for _, n in after]
        assert last < numbers[0] <= last + 2 and numbers == list(range(numbers[0], numbers[0] + len(numbers))), \
            (name, last, numbers)
    assert "nothing to do" in nestor(home, "lab", "up", str(lab), netns=ns).stdout
    nestor(home, "lab", "down", "counters")
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
