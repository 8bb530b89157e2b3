"""A nested lab on real QEMU (issue 17): examples/quickstart.lab.yaml (an L1 nested host with an
inner switch, NAT and an L2 appliance that pings L0 through the L1's NAT), in a test namespace:
plan, up, up again, status, down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import nestor
from tests.integration.test_network import NewNetns, netns_maker

# On demand: it has not passed yet (the L2's ping through l1's API outlasted the test; issue 17 note).
pytestmark = [pytest.mark.vm, pytest.mark.nested, pytest.mark.ondemand]

LAB = Path(__file__).resolve().parents[2] / "examples" / "quickstart.lab.yaml"


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
        log = l1.vm_log("l2", until="l2-ping: ", timeout=180).decode(errors="replace")
        assert "l2-ping: " in log
        log = l1.vm_log("l2", tail=4096).decode(errors="replace")
    assert "l2-ping: ok" in log, log[-2000:]

    again = nestor(home, "lab", "up", str(LAB), netns=ns, timeout=300)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr
    status = json.loads(nestor(home, "lab", "status", "quickstart", "-o", "json", timeout=300).stdout)
    states = {vm["path"]: vm["state"] for level in status["levels"] for vm in level["vms"]}
    assert states == {"l1": "running", "l1/l2": "running"}

    down = nestor(home, "lab", "down", "quickstart", timeout=300)
    assert "removed 2 objects" in down.stdout  # l1 and qs0: l1's switch, NAT and l2 went with l1
    assert json.loads(nestor(home, "vm", "list", "-o", "json").stdout) == []
    assert json.loads(nestor(home, "switch", "list", "-o", "json", netns=ns).stdout) == []
