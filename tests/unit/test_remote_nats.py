"""The seed's NAT on a libvirt host: a libvirt NAT network (libvirt's test driver, in-process)."""

from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from nestor.errors import Conflict, InvalidInput, NotFound, StateError
from nestor.remote import libvirt_engine, netxml, testnode
from nestor.remote.hosts import Hosts
from nestor.remote.nats import RemoteNats
from nestor.service.net_types import NatSpec
from nestor.service.types import VMSpec
from nestor.state import db

G = 1 << 30


@pytest.fixture
def nats(tmp_path: Path) -> Iterator[RemoteNats]:
    for name, kind in (("a", "amd"), ("b", "intel")):
        (tmp_path / f"{name}.xml").write_text(testnode.node_xml(kind, 16 * G))
    hosts = Hosts(db.connect(tmp_path / "nestor.db"))
    for name in "ab":
        hosts.host_add(name, f"test://{tmp_path}/{name}.xml")
    yield RemoteNats(hosts)
    libvirt_engine.disconnect_all()


def network(nats: RemoteNats, host: str, name: str) -> libvirt.virNetwork:
    return nats.hosts.engine(nats.hosts.hosts.get(host)).conn.networkLookupByName(name)


def test_network_xml() -> None:
    text = netxml.render(netxml.NatSpec("vmnat", "00000000-0000-0000-0000-00000000000a", "192.168.100.0/24", True))
    assert text == """<network>
  <name>vmnat</name>
  <uuid>00000000-0000-0000-0000-00000000000a</uuid>
  <forward mode="nat">
    <nat>
      <port start="1024" end="65535" />
    </nat>
  </forward>
  <bridge stp="off" delay="0" />
  <ip address="192.168.100.1" prefix="24">
    <dhcp>
      <range start="192.168.100.2" end="192.168.100.254" />
    </dhcp>
  </ip>
</network>
"""
    assert "<dhcp>" not in netxml.render(netxml.NatSpec("n", "u", "10.1.0.0/16", False))


def test_nat_on_a_host_is_a_started_libvirt_nat_network(nats: RemoteNats) -> None:
    made = nats.nat_new(NatSpec("vmnat", None, "192.168.100.0/24", host="a", dhcp=True))
    assert (made.host, made.prefix, made.gateway, made.state) == ("a", "192.168.100.0/24", "192.168.100.1", "active")
    assert nats.nat_show("vmnat") == made
    net = network(nats, "a", "vmnat")
    assert net.isActive() and net.autostart()
    xml = net.XMLDesc(0)
    assert "<forward mode='nat'>" in xml and "address='192.168.100.1'" in xml and "<range start='192.168.100.2'" in xml
    assert [n.name for n in nats.nat_list()] == ["vmnat"]

    # A VM on that host joins it; the NAT cannot go while the VM uses it.
    nats.hosts.vm_new(VMSpec("web", host="a", network="vmnat"))
    vm, host = nats.hosts.get_vm("web")
    dom = nats.hosts.engine(host).conn.lookupByUUIDString(vm.uuid)
    assert "<source network='vmnat'" in dom.XMLDesc(0)
    with pytest.raises(StateError, match="used by 1 VM"):
        nats.nat_remove("vmnat")
    nats.hosts.vm_remove("web")
    nats.nat_remove("vmnat")
    assert nats.nat_list() == []
    with pytest.raises(libvirt.libvirtError):
        network(nats, "a", "vmnat")


def test_bad_input_changes_nothing(nats: RemoteNats) -> None:
    nats.nat_new(NatSpec("vmnat", None, "192.168.100.0/24", host="a"))
    with pytest.raises(Conflict, match="already exists"):
        nats.nat_new(NatSpec("vmnat", None, "10.5.0.0/24", host="b"))
    with pytest.raises(Conflict, match="overlaps nat 'vmnat'"):
        nats.nat_new(NatSpec("other", None, "192.168.0.0/16", host="a"))
    with pytest.raises(InvalidInput, match="host bits"):
        nats.nat_new(NatSpec("other", None, "192.168.7.1/24", host="a"))
    with pytest.raises(NotFound, match="host 'nope'"):
        nats.nat_new(NatSpec("other", None, "10.6.0.0/24", host="nope"))
    with pytest.raises(InvalidInput, match="too small for a NAT"):
        nats.nat_new(NatSpec("other", None, "10.7.0.0/31", host="a", dhcp=True))
    with pytest.raises(StateError, match="is on host 'a', not on host 'b'"):
        nats.check_network("vmnat", "b")
    with pytest.raises(NotFound):
        nats.nat_remove("nope")
    assert [n.name for n in nats.nat_list()] == ["vmnat"]
    for host in "ab":
        conn = nats.hosts.engine(nats.hosts.hosts.get(host)).conn
        assert conn.listNetworks() + conn.listDefinedNetworks() == (["vmnat"] if host == "a" else [])


def test_a_foreign_network_of_that_name_is_not_taken(nats: RemoteNats) -> None:
    conn = nats.hosts.engine(nats.hosts.hosts.get("b")).conn
    conn.networkDefineXML("<network><name>theirs</name><bridge name='br9'/></network>")
    with pytest.raises(Conflict, match="not nestor's"):
        nats.nat_new(NatSpec("theirs", None, "10.9.0.0/24", host="b"))
    assert nats.nat_list() == []


def test_a_new_connection_gets_the_nat_back(nats: RemoteNats, tmp_path: Path) -> None:
    """A test:///PATH.xml driver forgets between processes; nestor defines its NAT again."""
    nats.nat_new(NatSpec("vmnat", None, "192.168.100.0/24", host="a"))
    libvirt_engine.disconnect_all()
    again = RemoteNats(Hosts(db.connect(tmp_path / "nestor.db")))
    assert [(n.name, n.state) for n in again.nat_list()] == [("vmnat", "active")]


def test_a_vm_moves_only_where_its_network_is(nats: RemoteNats) -> None:
    nats.nat_new(NatSpec("vmnat", None, "192.168.100.0/24", host="a"))
    nats.hosts.vm_new(VMSpec("web", host="a", network="vmnat"))
    with pytest.raises(StateError, match="host 'b' has no network 'vmnat'"):
        nats.hosts.vm_move("web", "b", lambda line: None)
    assert nats.hosts.get_vm("web")[1].name == "a"
