"""The seed's NAT on a libvirt host: `nat new NAME --host H --prefix CIDR [--dhcp]`.

nestor keeps the intent (a `remote_nats` row), libvirt the network (remote/netxml.py): defined,
started and autostarted through the binding. A VM on that host joins it with `vm new --host H
--network NAME`. NAT names are one namespace with this machine's NATs, so `nat remove NAME`
finds either. As for VMs, a test:///PATH.xml host forgets between processes: nestor defines its
NATs there again when it finds them missing.

`RemoteNats` answers the Hypervisor protocol's NAT methods (nat_new, nat_list, nat_show,
nat_remove) with its signatures and types (NatInfo), as remote/hosts.py does for VMs.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import uuid as uuidlib
from dataclasses import dataclass, replace

from ..errors import Conflict, InvalidInput, NestorError, NotFound, StateError, error_context
from ..model import validate_name
from ..net import addresses
from ..service.net_types import Lease, NatInfo, NatSpec
from . import netxml
from .hosts import Hosts
from .libvirt_engine import MISSING, LibvirtHost
from .store import Host


@dataclass(frozen=True)
class RemoteNat:
    name: str
    host_id: int
    uuid: str
    prefix: str
    dhcp: bool
    id: int = 0


def _nat(row: sqlite3.Row) -> RemoteNat:
    return RemoteNat(row["name"], row["host_id"], row["uuid"], row["prefix"], bool(row["dhcp"]), row["id"])


class NatRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def find(self, name: str) -> RemoteNat | None:
        row = self.conn.execute("SELECT * FROM remote_nats WHERE name = ?", (name,)).fetchone()
        return _nat(row) if row else None

    def all(self) -> list[RemoteNat]:
        return [_nat(r) for r in self.conn.execute("SELECT * FROM remote_nats ORDER BY name")]

    def on_host(self, host_id: int) -> list[RemoteNat]:
        return [_nat(r) for r in self.conn.execute("SELECT * FROM remote_nats WHERE host_id = ? ORDER BY name",
                                                   (host_id,))]

    def add(self, nat: RemoteNat) -> RemoteNat:
        if self.conn.execute("SELECT 1 FROM nats WHERE name = ?", (nat.name,)).fetchone():
            raise Conflict(f"nat '{nat.name}' already exists (on this machine)", hint="choose another name")
        try:
            self.conn.execute("INSERT INTO remote_nats (name, host_id, uuid, prefix, dhcp) VALUES (?,?,?,?,?)",
                              (nat.name, nat.host_id, nat.uuid, nat.prefix, int(nat.dhcp)))
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"nat '{nat.name}' already exists", hint="choose another name (nestor nat list)") from exc
        found = self.find(nat.name)
        assert found is not None
        return found

    def remove(self, nat_id: int) -> None:
        self.conn.execute("DELETE FROM remote_nats WHERE id = ?", (nat_id,))


class RemoteNats:
    def __init__(self, hosts: Hosts) -> None:
        self.hosts = hosts
        self.repo = NatRepo(hosts.hosts.conn)

    def owns(self, name: str) -> bool:
        return self.repo.find(name) is not None

    def _engine(self, nat: RemoteNat, host: Host) -> LibvirtHost:
        engine = self.hosts.engine(host)
        if host.uri.startswith("test:") and not engine.has_network(nat.name):  # the test driver forgot it
            engine.create_network(netxml.render(self._spec(nat)), nat.name)
        return engine

    @staticmethod
    def _spec(nat: RemoteNat) -> netxml.NatSpec:
        return netxml.NatSpec(nat.name, nat.uuid, nat.prefix, nat.dhcp)

    def nat_new(self, spec: NatSpec) -> NatInfo:
        if spec.host is None or spec.switch is not None:
            raise InvalidInput("a NAT on a libvirt host takes --host and no --switch",
                               hint="nestor nat new NAME --host H --prefix CIDR")
        name, host_name, prefix, dhcp = spec.name, spec.host, spec.prefix, spec.dhcp
        validate_name(name, "nat")
        net = addresses.parse_prefix(prefix)
        host = self.hosts.hosts.get(validate_name(host_name, "host"))
        if self.repo.find(name):
            raise Conflict(f"nat '{name}' already exists", hint="choose another name (nestor nat list)")
        addresses.check_no_overlap(name, net, ((n.name, ipaddress.IPv4Network(n.prefix))
                                               for n in self.repo.on_host(host.id)))
        if dhcp:
            addresses.dhcp_range(net, netxml.gateway(str(net)))  # a range must exist
        with error_context(nat=name, host=host.name):
            engine = self.hosts.engine(host)
            if engine.has_network(name):
                raise Conflict(f"host '{host.name}' already has a libvirt network '{name}' (not nestor's)",
                               hint="choose another name")
            nat = RemoteNat(name, host.id, str(uuidlib.uuid4()), str(net), dhcp)
            xml = netxml.render(self._spec(nat))  # before the insert: a bad spec changes nothing
            nat = self.repo.add(nat)
            try:
                engine.create_network(xml, name)
            except BaseException:
                self.repo.remove(nat.id)
                raise
            return self._info(nat, host)

    def _info(self, nat: RemoteNat, host: Host) -> NatInfo:
        """The NAT as nestor made it, and its libvirt network's state, bridge and leases now."""
        info = NatInfo(name=nat.name, switch=None, prefix=nat.prefix, gateway=str(netxml.gateway(nat.prefix)),
                       netns=None, dhcp=nat.dhcp, host=host.name)
        try:
            status = self._engine(nat, host).network_status(nat.name)
        except NestorError as exc:
            return replace(info, state=f"unknown ({exc.message})")
        leases = [Lease(str(x["mac"]), str(x["ip"]), str(x["hostname"])) for x in status["leases"]]
        return replace(info, leases=leases, state=status["state"], bridge=status["bridge"])

    def nat_list(self) -> list[NatInfo]:
        hosts = {h.id: h for h in self.hosts.hosts.all()}
        return [self._info(nat, hosts[nat.host_id]) for nat in self.repo.all()]

    def nat_show(self, name: str) -> NatInfo:
        nat = self.repo.find(validate_name(name, "nat"))
        if nat is None:
            raise NotFound(f"nat '{name}' not found", hint="nestor nat list shows the NATs")
        return self._info(nat, self.hosts.hosts.by_id(nat.host_id))

    def nat_remove(self, name: str) -> None:
        nat = self.repo.find(validate_name(name, "nat"))
        if nat is None:
            raise NotFound(f"nat '{name}' not found", hint="nestor nat list shows the NATs")
        host = self.hosts.hosts.by_id(nat.host_id)
        users = [vm.name for vm in self.hosts.vms.on_host(host.id) if vm.network == name]
        if users:
            raise StateError(f"nat '{name}' is used by {len(users)} VM(s) on host '{host.name}' "
                             f"({', '.join(users[:5])})", hint="remove those VMs first")
        with error_context(nat=name, host=host.name):
            engine = self.hosts.engine(host)
            if engine.network_status(name)["state"] != MISSING:
                engine.remove_network(name)
            self.repo.remove(nat.id)

    def check_network(self, network: str, host_name: str) -> None:
        """`vm new --host H --network N`: a nestor NAT N must be on H (else the VM could not start)."""
        nat = self.repo.find(network)
        if nat is None:
            return  # a libvirt network nestor did not make (e.g. 'default'): libvirt checks it at start
        host = self.hosts.hosts.by_id(nat.host_id)
        if host.name != host_name:
            raise StateError(f"nat '{network}' is on host '{host.name}', not on host '{host_name}'",
                             hint=f"nestor vm new … --host {host.name}, or nestor nat new NAME --host {host_name}")
        self._engine(nat, host)
