"""The libvirt-host use cases against libvirt's test driver (in-process, no daemon).

The test driver cannot read vCPU registers or migrate, so "is a hypervisor running inside" is
given by a detector the test sets (the seam of LibvirtHost); everything else is libvirt's own.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from nestor.errors import EngineError, InvalidInput, NotFound, PolicyError, StateError
from nestor.remote import libvirt_engine, testnode
from nestor.remote.hosts import AUTO, Hosts
from nestor.service.types import MemoryChange, MemoryOutcome, NewVM, StopHow, VMSpec, VMState
from nestor.state import db

G = 1 << 30
M = 1 << 20


class Detector:
    def __init__(self) -> None:
        self.answer: tuple[bool | None, str] = (False, "test: no hypervisor")
        self.asked = 0

    def __call__(self, dom: Any) -> tuple[bool | None, str]:
        self.asked += 1
        return self.answer


@pytest.fixture
def detector() -> Detector:
    return Detector()


@pytest.fixture
def svc(tmp_path: Path, detector: Detector) -> Iterator[Hosts]:
    for name, kind, memory in (("a", "amd", 16 * G), ("b", "intel", 32 * G), ("c", "amd-nonested", 64 * G)):
        (tmp_path / f"{name}.xml").write_text(testnode.node_xml(kind, memory))
    hosts = Hosts(db.connect(tmp_path / "nestor.db"), detector)
    for name in "abc":
        hosts.host_add(name, f"test://{tmp_path}/{name}.xml")
    yield hosts
    libvirt_engine.disconnect_all()


def new(svc: Hosts, name: str, host: str, **kw: Any) -> NewVM:
    return svc.vm_new(VMSpec(name, host=host, **kw))


def startup(size: int) -> MemoryChange:
    return MemoryChange(startup=size)


def domain(svc: Hosts, vm_name: str) -> Any:
    vm, host = svc.get_vm(vm_name)
    return svc.engine(host).conn.lookupByUUIDString(vm.uuid)


def test_hosts_show_capabilities(svc: Hosts) -> None:
    infos = {h.name: h for h in svc.host_list()}
    assert infos["a"].nesting and infos["a"].vendor == "AMD" and infos["a"].nesting_flag == "svm"
    assert infos["b"].nesting and infos["b"].nesting_flag == "vmx"
    assert infos["c"].reachable and not infos["c"].nesting
    assert infos["b"].free_memory == 32 * G and infos["b"].vms == 0


def test_add_refuses_duplicates_and_unreachable(svc: Hosts, tmp_path: Path) -> None:
    from nestor.errors import Conflict

    with pytest.raises(Conflict, match="already exists"):
        svc.host_add("a", "test:///default")
    (tmp_path / "broken.xml").write_text("<nope/>")
    with pytest.raises(EngineError, match="cannot connect"):
        svc.host_add("z", f"test://{tmp_path}/broken.xml")
    assert [h.name for h in svc.hosts.all()] == ["a", "b", "c"]


def test_placement_picks_most_free_memory_that_can_nest(svc: Hosts) -> None:
    made = new(svc, "l1", AUTO, memory=2 * G, nested=True)
    assert made.vm.host == "b" and made.placement and made.placement.startswith("placed on host 'b'")
    # c has more memory but cannot nest
    assert new(svc, "web", AUTO, memory=1 * G).vm.host == "c"
    xml = domain(svc, "l1").XMLDesc(0)
    assert "<feature policy='require' name='vmx'/>" in xml  # Intel host: vmx
    web = domain(svc, "web").XMLDesc(0)
    assert "<feature policy='disable' name='svm'/>" in web and "<feature policy='disable' name='vmx'/>" in web


def test_nested_refused_where_it_cannot_be_offered(svc: Hosts) -> None:
    with pytest.raises(StateError, match="host 'c' cannot offer nested virtualization"):
        new(svc, "l1", "c", nested=True)
    assert svc.vms.find("l1") is None
    with pytest.raises(PolicyError, match="no host can take"):
        new(svc, "big", AUTO, memory=40 * G, nested=True)
    with pytest.raises(InvalidInput, match="more than host 'a' has"):
        new(svc, "big", "a", memory=20 * G)
    assert svc.vms.find("big") is None


def test_lifecycle_and_remove_refused_while_vms(svc: Hosts) -> None:
    new(svc, "web", "a", memory=512 * M, network="default")
    assert "clean-traffic" in domain(svc, "web").XMLDesc(0)
    assert svc.vm_show("web").state is VMState.OFF
    assert svc.vm_start("web").state is VMState.RUNNING
    assert svc.vm_show("web").state is VMState.RUNNING
    with pytest.raises(StateError, match="already running"):
        svc.vm_start("web")
    with pytest.raises(StateError, match=r"host 'a' has 1 VM\(s\) of nestor's \(web\)"):
        svc.host_remove("a")
    with pytest.raises(StateError, match="is running"):
        svc.vm_remove("web")
    stopped = svc.vm_stop("web", turn_off=True)
    assert stopped.name == "web" and stopped.how is StopHow.TURNED_OFF
    svc.vm_remove("web")
    svc.host_remove("a")
    with pytest.raises(NotFound):
        svc.hosts.get("a")


def test_toggle_only_while_off_r2(svc: Hosts) -> None:
    new(svc, "l1", "a", nested=False)
    svc.vm_start("l1")
    with pytest.raises(PolicyError, match=r"is running: stop it first \(nested virtualization can only be changed"):
        svc.vm_set_processor("l1", nested=True)
    svc.vm_stop("l1", turn_off=True)
    svc.vm_set_processor("l1", nested=True)
    assert "<feature policy='require' name='svm'/>" in domain(svc, "l1").XMLDesc(0)


def test_memory_rule_r7_and_save_r12(svc: Hosts, detector: Detector) -> None:
    new(svc, "l1", "a", memory=1 * G, maximum=2 * G, nested=True)
    svc.vm_start("l1")
    detector.answer = (True, "test: EFER.SVME set")
    with pytest.raises(PolicyError, match=r"memory not changed \(rule R7\)"):
        svc.vm_set_memory("l1", startup(1536 * M))
    assert domain(svc, "l1").info()[2] == 1 * G // 1024  # the balloon did not move
    with pytest.raises(PolicyError, match=r"cannot be saved \(rules R12-R14\)"):
        svc.vm_save("l1")
    assert svc.vm_show("l1").hypervisor_running is True
    detector.answer = (None, "unknown: no monitor")
    with pytest.raises(StateError, match="cannot tell whether a hypervisor runs inside"):
        svc.vm_set_memory("l1", startup(1536 * M))
    detector.answer = (False, "test: EFER.SVME clear")
    resized = svc.vm_set_memory("l1", startup(1536 * M))
    assert resized.outcome is MemoryOutcome.RESIZED and resized.target == 1536 * M
    assert domain(svc, "l1").info()[2] == 1536 * M // 1024  # libvirt's balloon target moved
    with pytest.raises(StateError, match="room for 2G"):
        svc.vm_set_memory("l1", startup(3 * G))
    saved = svc.vm_save("l1")
    assert saved.name == "l1" and saved.size == 0 and "host 'a'" in saved.path
    assert domain(svc, "l1").hasManagedSaveImage(0) == 1
    assert svc.vm_show("l1").state is VMState.SAVED


def test_memory_rule_not_asked_without_nesting(svc: Hosts, detector: Detector) -> None:
    new(svc, "web", "a", memory=1 * G, maximum=2 * G)
    svc.vm_start("web")
    detector.answer = (True, "would refuse")
    svc.vm_set_memory("web", startup(1536 * M))
    assert detector.asked == 0


def test_move_refused_while_a_hypervisor_runs(svc: Hosts, detector: Detector) -> None:
    new(svc, "l1", "a", nested=True)
    svc.vm_start("l1")
    detector.answer = (True, "test: EFER.SVME set")
    lines: list[str] = []
    with pytest.raises(PolicyError, match=r"cannot be moved \(rules R12-R14\)"):
        svc.vm_move("l1", "b", lines.append)
    with pytest.raises(StateError, match="cannot offer nested"):
        detector.answer = (False, "clear")
        svc.vm_move("l1", "c", lines.append)
    _vm, host = svc.get_vm("l1")
    assert host.name == "a" and lines == []


def test_running_nested_vm_keeps_its_vendor(svc: Hosts, tmp_path: Path) -> None:
    new(svc, "l1", "a", nested=True)  # AMD: svm
    svc.vm_start("l1")
    with pytest.raises(StateError, match="runs with svm exposed; host 'b' offers vmx"):
        svc.vm_move("l1", "b", lambda line: None)
    assert svc.get_vm("l1")[1].name == "a"


def test_live_move_on_the_test_driver_fails_cleanly(svc: Hosts) -> None:
    """libvirt's test driver does not implement migration: nestor reports it, the VM stays."""
    new(svc, "web", "a")
    svc.vm_start("web")
    lines: list[str] = []
    with pytest.raises(EngineError, match="was not moved from 'a' to 'b'"):
        svc.vm_move("web", "b", lines.append)
    assert svc.get_vm("web")[1].name == "a" and svc.vm_show("web").state is VMState.RUNNING
    assert lines and "live, persist-dest, undefine-source" in lines[0]


def test_off_vm_moves_its_definition(svc: Hosts) -> None:
    new(svc, "web", "a", nested=True)
    moved = svc.vm_move("web", "b")
    assert (moved.source, moved.dest, moved.live, moved.disk_copied_to) == ("a", "b", False, None)
    vm, host = svc.get_vm("web")
    assert host.name == "b"
    assert "name='vmx'" in svc.engine(host).conn.lookupByUUIDString(vm.uuid).XMLDesc(0)  # re-planned for Intel
    a = svc.engine(svc.hosts.get("a")).conn
    with pytest.raises(libvirt.libvirtError):
        a.lookupByUUIDString(vm.uuid)


def test_a_new_connection_gets_nestors_vms_back(svc: Hosts, tmp_path: Path) -> None:
    """A test:///PATH.xml driver forgets between processes; nestor redefines from its record."""
    new(svc, "web", "a")
    libvirt_engine.disconnect_all()
    again = Hosts(db.connect(tmp_path / "nestor.db"))
    assert again.vm_show("web").state is VMState.OFF


def test_names_are_shared_with_local_vms(svc: Hosts, tmp_path: Path) -> None:
    from nestor.errors import Conflict
    from nestor.model import VMConfig

    new(svc, "web", "a")
    with pytest.raises(Conflict, match="on a libvirt host"):
        db.VMRepo(db.connect(tmp_path / "nestor.db")).add(VMConfig(name="web"))
    with pytest.raises(InvalidInput):
        new(svc, "Bad_Name", "a")


def test_off_vm_with_a_disk_the_destination_lacks_is_refused(svc: Hosts) -> None:
    """libvirt copies a disk only in a live migration (VIR_MIGRATE_NON_SHARED_DISK): nothing changes."""
    new(svc, "db", "a", disk="/srv/a/db.qcow2")
    with pytest.raises(StateError, match="does not have vm 'db''s disk /srv/a/db.qcow2"):
        svc.vm_move("db", "b", lambda line: None)
    vm, host = svc.get_vm("db")
    assert host.name == "a" and vm.disk == "/srv/a/db.qcow2"
    assert svc.engine(svc.hosts.get("b")).states() == {}
