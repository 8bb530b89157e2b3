"""`nestor host …`, `vm … --host`, `vm move` and `tree` through the real CLI (its `main`, with its
error handling and exit codes), in this process for speed, on libvirt's test driver
(test:///PATH.xml files). Every command ends by closing libvirt's connections, so the next one
starts as a new process would: the test driver re-reads its file and nestor redefines its VMs
from its record. (One subprocess run below keeps `python -m nestor` itself covered.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from nestor.remote import libvirt_engine, testnode
from tests.helpers import nestor as nestor_process
from tests.helpers import nestor_inprocess

G = 1 << 30


@pytest.fixture
def home(tmp_path: Path) -> Path:
    root = tmp_path / "home"
    for name, kind, memory in (("a", "amd", 16 * G), ("b", "intel", 32 * G), ("c", "amd-nonested", 64 * G)):
        (tmp_path / f"{name}.xml").write_text(testnode.node_xml(kind, memory))
    return root


nestor = nestor_inprocess


@pytest.fixture(autouse=True)
def _closed() -> Iterator[None]:
    yield
    libvirt_engine.disconnect_all()


def uri(home: Path, name: str) -> str:
    return f"test://{home.parent}/{name}.xml"


def refused(home: Path, *args: str) -> tuple[int, str]:
    hosts_before = nestor(home, "host", "list", "-o", "json").stdout
    vms_before = nestor(home, "vm", "list", "-o", "json").stdout
    result = nestor(home, *args, check=False)
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert lines and lines[0].startswith("error: ") and len(lines) <= 2, result.stderr
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert nestor(home, "host", "list", "-o", "json").stdout == hosts_before
    assert nestor(home, "vm", "list", "-o", "json").stdout == vms_before
    return result.returncode, lines[0]


def test_hosts_end_to_end(home: Path) -> None:
    for name in "abc":
        nestor(home, "host", "add", name, uri(home, name))
    hosts = {h["name"]: h for h in json.loads(nestor(home, "host", "list", "-o", "json").stdout)}
    assert (hosts["a"]["vendor"], hosts["a"]["nesting"], hosts["a"]["nesting_flag"]) == ("AMD", True, "svm")
    assert (hosts["b"]["vendor"], hosts["b"]["nesting_flag"]) == ("Intel", "vmx")
    assert hosts["c"]["nesting"] is False and "kvm_amd" in hosts["c"]["nesting_reason"]
    assert hosts["c"]["free_memory"] == 64 * G and hosts["a"]["vms"] == 0
    table = nestor(home, "host", "list").stdout
    assert "NESTING" in table and "svm" in table and "vmx" in table
    shown = json.loads(nestor(home, "host", "show", "b", "-o", "json").stdout)
    assert shown["uri"] == uri(home, "b") and shown["nesting"] is True

    out = nestor(home, "vm", "new", "l1", "--host", "auto", "--nested", "--memory", "1G").stdout
    assert "placed on host 'b'" in out  # the most free memory among hosts that can nest
    nestor(home, "vm", "new", "web", "--host", "a", "--memory", "256M", "--maximum", "512M")
    vms = {v["name"]: v for v in json.loads(nestor(home, "vm", "list", "-o", "json").stdout)}
    assert vms["l1"]["host"] == "b" and vms["l1"]["state"] == "off" and vms["web"]["host"] == "a"
    assert "placed on host" not in nestor(home, "vm", "start", "web").stdout
    show = json.loads(nestor(home, "vm", "show", "l1", "-o", "json").stdout)
    assert show["nested"] is True and show["host"] == "b"

    tree = json.loads(nestor(home, "tree", "-o", "json").stdout)
    assert [h["host"] for h in tree["hosts"]] == ["a", "b", "c"]
    assert [vm["name"] for vm in tree["hosts"][1]["vms"]] == ["l1"]
    text = nestor(home, "tree").stdout
    assert "b (L0, libvirt test://" in text and "l1 (L1)" in text

    assert "moved to host 'a'" in nestor(home, "vm", "move", "l1", "--host", "a").stdout  # off: offline move
    assert json.loads(nestor(home, "vm", "show", "l1", "-o", "json").stdout)["host"] == "a"

    code, line = refused(home, "host", "remove", "a")
    assert code == 5 and "has 2 VM(s)" in line
    nestor(home, "vm", "remove", "l1")
    nestor(home, "vm", "remove", "web", "--force")
    nestor(home, "host", "remove", "a")
    assert [h["name"] for h in json.loads(nestor(home, "host", "list", "-o", "json").stdout)] == ["b", "c"]


def test_bad_input_changes_nothing(home: Path) -> None:
    nestor(home, "host", "add", "a", uri(home, "a"))
    nestor(home, "host", "add", "c", uri(home, "c"))
    assert refused(home, "host", "add", "x", "http://nope/system")[0] == 2
    assert refused(home, "host", "add", "x", "test:///no/such.xml")[0] == 3  # not found (the API: 404)
    assert refused(home, "host", "add", "Bad Name", "test:///default")[0] == 2
    assert "already has the URI" in refused(home, "host", "add", "a2", uri(home, "a"))[1]
    assert refused(home, "host", "show", "nope")[0] == 3
    assert refused(home, "host", "remove", "nope")[0] == 3
    assert "cannot offer nested" in refused(home, "vm", "new", "l1", "--host", "c", "--nested")[1]
    assert refused(home, "vm", "new", "l1", "--host", "nope")[0] == 3
    assert "takes no --image" in refused(home, "vm", "new", "l1", "--host", "a", "--image", "appliance")[1]
    assert "need --kernel" in refused(home, "vm", "new", "l1", "--host", "a", "--append", "quiet")[1]
    assert "are for a VM on a libvirt host" in refused(home, "vm", "new", "l1", "--disk", "/x.qcow2")[1]
    assert "no host can take" in refused(home, "vm", "new", "big", "--host", "auto", "--nested", "--memory", "20G")[1]
    nestor(home, "vm", "new", "web", "--host", "a")
    assert refused(home, "vm", "move", "web", "--host", "nope")[0] == 3
    assert "already on host 'a'" in refused(home, "vm", "move", "web", "--host", "a")[1]
    assert "only --startup" in refused(home, "vm", "set-memory", "web", "--dynamic", "on")[1]


def test_a_real_process_sees_what_the_last_one_did(home: Path) -> None:
    """`python -m nestor` in subprocesses: the test driver forgets, nestor redefines from its record."""
    nestor_process(home, "host", "add", "a", uri(home, "a"))
    nestor_process(home, "vm", "new", "web", "--host", "a", "--memory", "256M")
    nestor_process(home, "vm", "start", "web")
    shown = json.loads(nestor_process(home, "vm", "show", "web", "-o", "json").stdout)
    assert (shown["host"], shown["state"]) == ("a", "off")  # a new process: the test driver's domain is off again
    result = nestor_process(home, "host", "remove", "a", check=False)
    assert result.returncode == 5 and result.stderr.startswith("error: host 'a' has 1 VM(s)"), result


def test_host_check_still_works(home: Path) -> None:
    result = nestor(home, "host", "check", "-o", "json", check=False)
    assert result.returncode in (0, 1)
    assert {c["name"] for c in json.loads(result.stdout)["checks"]} >= {"qemu", "accelerator"}


def test_nat_on_a_libvirt_host(home: Path) -> None:
    nestor(home, "host", "add", "a", uri(home, "a"))
    nestor(home, "host", "add", "b", uri(home, "b"))
    created = json.loads(nestor(home, "nat", "new", "vmnat", "--host", "a", "--prefix", "192.168.100.0/24", "--dhcp",
                                "-o", "json").stdout)
    assert (created["host"], created["gateway"], created["state"], created["dhcp"]) == ("a", "192.168.100.1",
                                                                                       "active", True)
    assert "created (10.8.0.0/24 libvirt network on host b)" in nestor(
        home, "nat", "new", "other", "--host", "b", "--prefix", "10.8.0.0/24").stdout
    rows = {r["name"]: r for r in json.loads(nestor(home, "nat", "list", "-o", "json").stdout)}
    assert rows["vmnat"]["host"] == "a" and rows["other"]["host"] == "b" and rows["vmnat"]["state"] == "active"
    table = nestor(home, "nat", "list").stdout
    assert "HOST" in table and "vmnat" in table

    out = nestor(home, "vm", "new", "web", "--host", "auto", "--network", "vmnat").stdout
    assert json.loads(nestor(home, "vm", "show", "web", "-o", "json").stdout)["host"] == "a", out  # the NAT's host

    assert refused(home, "nat", "new", "x", "--switch", "sw", "--host", "a", "--prefix", "10.9.0.0/24")[0] == 2
    assert "either --switch" in refused(home, "nat", "new", "x", "--prefix", "10.9.0.0/24")[1]
    assert "overlaps nat 'vmnat'" in refused(home, "nat", "new", "x", "--host", "a", "--prefix", "192.168.0.0/16")[1]
    assert "already exists" in refused(home, "nat", "new", "vmnat", "--host", "b", "--prefix", "10.9.0.0/24")[1]
    assert "is on host 'a', not on host 'b'" in refused(home, "vm", "new", "db", "--host", "b", "--network", "vmnat")[1]
    assert "used by 1 VM(s)" in refused(home, "nat", "remove", "vmnat")[1]
    nestor(home, "vm", "remove", "web")
    nestor(home, "nat", "remove", "vmnat")
    nestor(home, "nat", "remove", "other")
    assert json.loads(nestor(home, "nat", "list", "-o", "json").stdout) == []


def test_a_uri_query_that_runs_or_reads_things_is_refused_before_connecting(home: Path, tmp_path: Path) -> None:
    """issue 18: libvirt's ssh transport runs `?command=` (and `?netcat=`) instead of ssh, as root here.
    The refusal comes before any connection: the program never runs."""
    ran = tmp_path / "ran"
    program = tmp_path / "program"
    program.write_text(f"#!/bin/sh\necho \"$@\" > {ran}\nexit 1\n")
    program.chmod(0o755)
    nestor(home, "host", "add", "a", uri(home, "a"))
    for query in (f"command={program}", f"netcat={program}", "keyfile=/etc/shadow", "no_verify=1",
                  "socket=/run/x.sock", "pkipath=/tmp", "no_tty=1&command=/bin/true"):
        code, line = refused(home, "host", "add", "x", f"qemu+ssh://127.0.0.1/system?{query}")
        assert code == 2 and "is not allowed" in line, line
    assert not ran.exists()
