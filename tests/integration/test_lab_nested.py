"""Nested labs on real QEMU (issue 17), each in a test namespace:
- the quickstart's lab (nestor/labs/quickstart.yaml): plan, up, up again, status, down (~30 s here);
- `lab save` / `lab restore` of an L1 with a counting L2 inside (~1.5 min here);
- examples/labs/two-hypervisors.yaml: two L1s up in parallel, each L2 reaches the other L1 (~40 s here);
- examples/labs/depth3.yaml: l3 in l2 in l1, with save and restore of the whole tree (~2 min here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import nestor
from tests.integration.test_network import NewNetns, netns_maker

pytestmark = [pytest.mark.vm, pytest.mark.nested]

LAB = Path(__file__).resolve().parents[2] / "src" / "nestor" / "labs" / "quickstart.yaml"  # the shipped one


@pytest.fixture
def nested_home(tmp_path: Path, nested_store: Path) -> Iterator[Path]:
    from tests.helpers import reap_home

    root = tmp_path / "home"
    root.mkdir()
    (root / "images").symlink_to(nested_store)
    try:
        yield root
    finally:
        reap_home(root)


@pytest.fixture
def netns(nested_home: Path) -> Iterator[NewNetns]:
    yield from netns_maker(nested_home)


@pytest.mark.timeout(900)
def test_the_quickstart_lab_up_again_status_down(nested_home: Path, netns: NewNetns) -> None:
    home, ns = nested_home, netns()
    planned = json.loads(nestor(home, "lab", "plan", str(LAB), "-o", "json", netns=ns).stdout)
    assert {(a["level"], a["name"], a["op"]) for a in planned["actions"] if a["kind"] == "vm"} == {
        ("", "l1", "create"), ("l1", "l2", "create")}
    up = nestor(home, "lab", "up", str(LAB), netns=ns, timeout=600)
    assert "l1/l2: started" in up.stderr, up.stderr

    from nestor.lab.levels import Levels

    with Levels(home, ns).open("l1") as l1:
        log = b"".join(l1.vm_log("l2", until="leaf-ping: ", timeout=180)).decode(errors="replace")
        assert "leaf-ping: " in log
        log = b"".join(l1.vm_log("l2", tail=4096)).decode(errors="replace")
    assert "leaf-ping: ok" in log, log[-2000:]

    again = nestor(home, "lab", "up", str(LAB), netns=ns, timeout=300)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    status = json.loads(nestor(home, "lab", "status", "quickstart", "-o", "json", timeout=300).stdout)
    states = {vm["path"]: vm["state"] for level in status["levels"] for vm in level["vms"]}
    assert states == {"l1": "running", "l1/l2": "running"}

    down = nestor(home, "lab", "down", "quickstart", timeout=300)
    assert "removed 2 objects" in down.stdout  # l1 and qs0: l1's switch, NAT and l2 went with l1
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
    assert json.loads(nestor(home, "switch", "list", "-o", "json", netns=ns).stdout) == []


NESTED_SAVE = """\
name: deepcount
vms:
  l1:
    image: nested-host
    memory: 1G
    cpus: 2
    nested: true
    switches:
      inner: {type: internal, address: 192.168.131.1/24}
    vms:
      l2:
        memory: 128M
        adapters: [{switch: inner, ip: 192.168.131.11/24}]
        run: |
          #!/bin/sh
          boot=$(cat /proc/sys/kernel/random/boot_id)
          n=0
          while :; do n=$((n+1)); echo "tick $boot $n"; sleep 1; done
"""


@pytest.mark.timeout(1500)
def test_lab_save_and_restore_of_an_l2_inside_an_l1(nested_home: Path, netns: NewNetns, tmp_path: Path) -> None:
    """`lab save` saves l2 inside l1 (through l1's nestor), then l1; `lab restore` resumes l1,
    waits for its nestor, resumes l2: l2's counter goes on from where it stopped, same boot."""
    import time

    from nestor.lab.levels import Levels
    from tests.integration.test_lab import ticks

    home, ns = nested_home, netns()
    lab = tmp_path / "deepcount.lab.yaml"
    lab.write_text(NESTED_SAVE)
    up = nestor(home, "lab", "up", str(lab), netns=ns, timeout=900)
    assert "l1/l2: started" in up.stderr, up.stderr

    def l2_ticks() -> list[tuple[str, int]]:
        with Levels(home, ns).open("l1") as l1:
            return ticks(b"".join(l1.vm_log("l2", tail=1 << 16)).decode(errors="replace"))

    deadline = time.monotonic() + 300
    while len(l2_ticks()) < 3:
        assert time.monotonic() < deadline, "l2's counter did not start"
        time.sleep(5)

    saved = nestor(home, "lab", "save", "deepcount", timeout=600)
    assert "saved 2 VMs (l1/l2, l1)" in saved.stdout, saved.stdout + saved.stderr
    assert saved.stderr.index("l1/l2: saving") < saved.stderr.index("l1: saving")  # bottom-up
    states = {vm["name"]: vm["state"] for vm in json.loads(nestor(home, "vm", "list", "-o", "json").stdout)}
    assert states == {"l1": "saved"}

    restored = nestor(home, "lab", "restore", "deepcount", timeout=900)
    assert "restored 2 VMs (l1, l1/l2)" in restored.stdout, restored.stdout + restored.stderr
    before = None
    status = json.loads(nestor(home, "lab", "status", "deepcount", "-o", "json", timeout=300).stdout)
    assert {vm["path"]: vm["state"] for level in status["levels"] for vm in level["vms"]} == {
        "l1": "running", "l1/l2": "running"}
    deadline = time.monotonic() + 300
    while True:
        seen = l2_ticks()
        boots = list(dict.fromkeys(b for b, _ in seen))
        assert len(boots) == 1, boots  # one boot id in the whole log: resumed, never rebooted
        if before is None:
            before = seen
        numbers = [n for _, n in seen]
        if len(seen) >= len(before) + 3:
            break
        assert time.monotonic() < deadline, seen[-5:]
        time.sleep(5)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers  # no restart at 1, no gap

    down = nestor(home, "lab", "down", "deepcount", timeout=300)
    assert "removed 1 object" in down.stdout
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "labs"


@pytest.mark.timeout(2400)
def test_the_two_hypervisors_example(nested_home: Path, netns: NewNetns) -> None:
    """examples/labs/two-hypervisors.yaml: hv1 and hv2 up in parallel, each L2 reaches the other
    L1 through its own L1's NAT and the L0 switch; a second `lab up` has nothing to do."""
    from nestor.lab.levels import Levels

    home, ns = nested_home, netns()
    lab = EXAMPLES / "two-hypervisors.yaml"
    up = nestor(home, "lab", "up", str(lab), netns=ns, timeout=1500)
    assert "hv1/web1: started" in up.stderr and "hv2/web2: started" in up.stderr, up.stderr
    for hv, web in (("hv1", "web1"), ("hv2", "web2")):
        with Levels(home, ns).open(hv) as level:
            b"".join(level.vm_log(web, until=f"{web}-ping: ", timeout=300))
            log = b"".join(level.vm_log(web, tail=4096)).decode(errors="replace")
        assert f"{web}-ping: ok" in log, log[-2000:]
    assert "nothing to do" in nestor(home, "lab", "up", str(lab), netns=ns, timeout=600).stdout
    assert "removed 3 objects" in nestor(home, "lab", "down", "twohv", timeout=300).stdout
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []


@pytest.mark.timeout(3600)
def test_the_depth3_example_saves_and_restores(nested_home: Path, netns: NewNetns) -> None:
    """examples/labs/depth3.yaml: l3 inside l2 inside l1; its counter goes on after `lab save` and
    `lab restore` of the whole tree (l3, then l2, then l1 saved; restored the other way)."""
    import time

    from nestor.lab.levels import Levels
    from tests.integration.test_lab import ticks

    home, ns = nested_home, netns()
    up = nestor(home, "lab", "up", str(EXAMPLES / "depth3.yaml"), netns=ns, timeout=3000)
    assert "l1/l2/l3: started" in up.stderr, up.stderr

    def l3_ticks() -> list[tuple[str, int]]:
        with Levels(home, ns).open("l1/l2") as l2:
            return ticks(b"".join(l2.vm_log("l3", tail=1 << 16)).decode(errors="replace"))

    deadline = time.monotonic() + 900
    while len(l3_ticks()) < 3:
        assert time.monotonic() < deadline, "l3's counter did not start"
        time.sleep(10)
    saved = nestor(home, "lab", "save", "deep3", timeout=1200)
    assert "saved 3 VMs (l1/l2/l3, l1/l2, l1)" in saved.stdout, saved.stdout + saved.stderr
    restored = nestor(home, "lab", "restore", "deep3", timeout=1800)
    assert "restored 3 VMs (l1, l1/l2, l1/l2/l3)" in restored.stdout, restored.stdout + restored.stderr
    before = len(l3_ticks())
    deadline = time.monotonic() + 900
    while True:
        seen = l3_ticks()
        assert len(set(b for b, _ in seen)) == 1, seen[-5:]  # one boot: resumed, never rebooted
        if len(seen) >= before + 3:
            break
        assert time.monotonic() < deadline, seen[-5:]
        time.sleep(10)
    numbers = [n for _, n in seen]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    nestor(home, "lab", "down", "deep3", timeout=600)
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
