"""Labs through the API (issue 17): `nestor serve` of a home in a test network namespace, driven by
nestor.client.Client (the same lab_* methods as the Service), raw httpx for the status codes, and
the event stream for the `lab` events. The lab is cheap: one appliance VM at L0 on an internal
switch, no nested host."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from nestor.client import Client
from nestor.errors import InvalidInput, NotFound, PolicyError
from tests.helpers import Daemon, nestor, reap_home
from tests.integration.test_api import EventWatcher
from tests.integration.test_network import NewNetns, netns_maker, subnet

pytestmark = pytest.mark.vm


@pytest.fixture
def netns(home: Path) -> Iterator[NewNetns]:
    yield from netns_maker(home)


@pytest.fixture
def served(home: Path, netns: NewNetns) -> Iterator[tuple[Daemon, Client, httpx.Client, str]]:
    ns = netns()
    run = Path(tempfile.mkdtemp(prefix="nt-lab-", dir="/tmp"))
    daemon = Daemon(home, run / "api.sock", netns=ns)
    try:
        daemon.wait_ready()
        with Client(socket=daemon.socket, timeout=120) as client, \
                httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket)), base_url="http://nestor",
                             timeout=60) as raw:
            yield daemon, client, raw, ns
    finally:
        daemon.stop()
        reap_home(home)
        shutil.rmtree(run, ignore_errors=True)


def one_vm(net: int) -> str:
    return f"""\
name: tiny
switches:
  lan: {{type: internal, address: 10.{net}.0.1/24}}
vms:
  a:
    memory: 128M
    adapters: [{{switch: lan, ip: 10.{net}.0.11/24}}]
"""


def test_a_lab_through_the_api(home: Path, served: tuple[Daemon, Client, httpx.Client, str]) -> None:
    daemon, api, raw, ns = served
    net = subnet()
    text = one_vm(net)

    # bad files: the CLI's one line and hint, as a 400, and nothing is made
    bad = raw.post("/v1/labs/plan", json={"text": "name: tiny\nvms:\n  a: {imagee: appliance}\n", "source": "t.yaml"})
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["message"] == "vms.a: unknown key 'imagee'"
    assert bad.json()["error"]["hint"] == "did you mean 'image'?"
    broken = raw.post("/v1/labs", json={"text": "name: tiny\nvms: [1\n"})
    assert broken.status_code == 400, broken.text
    assert broken.json()["error"]["message"].startswith("lab file:3:1: not valid YAML")
    with pytest.raises(InvalidInput, match=r"^t\.yaml:2:1: duplicate key 'name'"):
        api.lab_plan("name: tiny\nname: again\n", source="t.yaml")
    assert raw.post("/v1/labs", json={"text": text, "file": "/etc/passwd"}).status_code == 400  # no such field
    assert raw.get("/v1/labs/tiny").status_code == 404
    assert raw.post("/v1/labs/tiny/save").status_code == 404  # before any operation is made
    assert api.vm_list() == [] and api.lab_list() == []

    planned = api.lab_plan(text)
    assert {(a.level, a.kind, a.name): a.op for a in planned.actions} == {("", "switch", "lan"): "create",
                                                                         ("", "vm", "a"): "create"}
    assert planned.problems == [] and planned.changes == 2
    assert api.vm_list() == []  # plan changed nothing

    refused = api.lab_plan("name: big\nvms:\n  a: {memory: 64T}\n")
    assert [p.rule for p in refused.problems] == ["memory"]
    with pytest.raises(PolicyError, match="preflight refused") as err:
        api.lab_up("name: big\nvms:\n  a: {memory: 64T}\n")
    assert err.value.rule == "preflight"

    events = EventWatcher(daemon.socket)
    try:
        lines: list[str] = []
        up = api.lab_up(text, lines.append, source="/home/me/tiny.yaml")
        assert up.lab == "tiny" and not up.up_to_date and up.failed == [] and up.changes == len(up.done) >= 2
        assert any("a: started" in line for line in lines), lines  # progress per VM, as the CLI shows it
        events.wait_for(type="lab", lab="tiny", action="up", status="running")
        assert events.wait_for(type="lab", lab="tiny", action="up", progress=next(x for x in lines if "a: started" in x))
        events.wait_for(type="lab", lab="tiny", action="up", status="success")

        again = api.lab_up(text)
        assert again.up_to_date and again.changes == 0

        assert [(i.name, i.file, i.netns) for i in api.lab_list()] == [("tiny", "/home/me/tiny.yaml", ns)]
        status = api.lab_status("tiny")
        (level,) = status.levels
        assert level.reachable and [(s.name, s.state) for s in level.switches] == [("lan", "present")]
        assert [(v.path, v.state, v.addresses) for v in level.vms] == [("a", "running", [f"10.{net}.0.11"])]
        inventory = api.lab_inventory("tiny")
        assert [(h.path, h.addresses) for h in inventory.hosts] == [("a", [f"10.{net}.0.11"])]
        assert inventory.ansible["_meta"]["hostvars"]["a"]["ansible_host"] == f"10.{net}.0.11"

        saved = api.lab_save("tiny")
        assert [s.path for s in saved.saved] == ["a"] and saved.saved[0].size > 0
        events.wait_for(type="lab", lab="tiny", action="save", status="success")
        assert api.lab_status("tiny").levels[0].vms[0].state == "saved"
        restored = api.lab_restore("tiny")
        assert (restored.restored, restored.failed) == (["a"], [])
        assert api.lab_status("tiny").levels[0].vms[0].state == "running"

        # the CLI reads the same lab from the same home (the API recorded it as the CLI does)
        shown = json.loads(nestor(home, "lab", "status", "tiny", "-o", "json").stdout)
        assert shown["levels"][0]["vms"][0]["state"] == "running"

        down = api.lab_down("tiny")
        assert {(o.kind, o.name) for o in down.removed} == {("vm", "a"), ("switch", "lan")}
        events.wait_for(type="lab", lab="tiny", action="down", status="success")
    finally:
        events.close()
    assert api.lab_list() == [] and api.vm_list() == [] and api.switch_list() == []
    with pytest.raises(NotFound):
        api.lab_status("tiny")
