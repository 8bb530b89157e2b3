"""SQLite rows for libvirt hosts and the VMs nestor made on them (intent, as for local VMs)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace

from ..errors import Conflict, NotFound


@dataclass(frozen=True)
class Host:
    name: str
    uri: str
    id: int = 0


@dataclass(frozen=True)
class RemoteVM:
    """A VM on a libvirt host: what the user asked for. Its state is observed through libvirt."""

    name: str
    host_id: int
    uuid: str
    vcpus: int
    memory: int  # startup memory, bytes (libvirt's currentMemory at start)
    memory_maximum: int  # the room (libvirt's <memory>)
    nested: bool = False
    disk: str | None = None
    kernel: str | None = None  # direct kernel boot: files on that host
    initrd: str | None = None
    append: str | None = None
    network: str | None = None
    mac: str | None = None
    mac_spoofing: bool = False
    id: int = 0


class HostRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, host: Host) -> Host:
        try:
            self.conn.execute("INSERT INTO hosts (name, uri) VALUES (?, ?)", (host.name, host.uri))
        except sqlite3.IntegrityError as exc:
            if "hosts.uri" in str(exc):
                other = self.conn.execute("SELECT name FROM hosts WHERE uri = ?", (host.uri,)).fetchone()
                raise Conflict(f"host '{other['name']}' already has the URI {host.uri}",
                               hint=f"nestor host show {other['name']}") from exc
            raise Conflict(f"host '{host.name}' already exists", hint="choose another name") from exc
        return self.get(host.name)

    def find(self, name: str) -> Host | None:
        row = self.conn.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        return Host(row["name"], row["uri"], row["id"]) if row else None

    def get(self, name: str) -> Host:
        host = self.find(name)
        if host is None:
            raise NotFound(f"host '{name}' not found", hint="nestor host list shows the hosts")
        return host

    def by_id(self, host_id: int) -> Host:
        row = self.conn.execute("SELECT * FROM hosts WHERE id = ?", (host_id,)).fetchone()
        return Host(row["name"], row["uri"], row["id"])

    def all(self) -> list[Host]:
        return [Host(r["name"], r["uri"], r["id"]) for r in self.conn.execute("SELECT * FROM hosts ORDER BY name")]

    def remove(self, host_id: int) -> None:
        self.conn.execute("DELETE FROM hosts WHERE id = ?", (host_id,))


def _vm(row: sqlite3.Row) -> RemoteVM:
    return RemoteVM(name=row["name"], host_id=row["host_id"], uuid=row["uuid"], vcpus=row["vcpus"],
                    memory=row["memory"], memory_maximum=row["memory_maximum"], nested=bool(row["nested"]),
                    disk=row["disk"], kernel=row["kernel"], initrd=row["initrd"], append=row["append"],
                    network=row["network"], mac=row["mac"],
                    mac_spoofing=bool(row["mac_spoofing"]), id=row["id"])


class RemoteVMRepo:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def add(self, vm: RemoteVM) -> RemoteVM:
        if self.conn.execute("SELECT 1 FROM vms WHERE name = ?", (vm.name,)).fetchone():
            raise Conflict(f"vm '{vm.name}' already exists (on this host)", hint="choose another name")
        try:
            self.conn.execute(
                "INSERT INTO remote_vms (name, host_id, uuid, vcpus, memory, memory_maximum, nested, disk, kernel,"
                " initrd, append, network, mac, mac_spoofing) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (vm.name, vm.host_id, vm.uuid, vm.vcpus, vm.memory, vm.memory_maximum, int(vm.nested), vm.disk,
                 vm.kernel, vm.initrd, vm.append, vm.network, vm.mac, int(vm.mac_spoofing)),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"vm '{vm.name}' already exists", hint="choose another name") from exc
        found = self.find(vm.name)
        assert found is not None
        return found

    def find(self, name: str) -> RemoteVM | None:
        row = self.conn.execute("SELECT * FROM remote_vms WHERE name = ?", (name,)).fetchone()
        return _vm(row) if row else None

    def on_host(self, host_id: int) -> list[RemoteVM]:
        return [_vm(r) for r in self.conn.execute("SELECT * FROM remote_vms WHERE host_id = ? ORDER BY name", (host_id,))]

    def count_on(self, host_id: int) -> int:
        return int(self.conn.execute("SELECT count(*) FROM remote_vms WHERE host_id = ?", (host_id,)).fetchone()[0])

    def counts(self) -> dict[int, int]:
        """nestor's VMs per host id."""
        return {r[0]: r[1] for r in self.conn.execute("SELECT host_id, count(*) FROM remote_vms GROUP BY host_id")}

    def all(self) -> Iterator[RemoteVM]:
        for row in self.conn.execute("SELECT * FROM remote_vms ORDER BY name"):
            yield _vm(row)

    def update(self, vm: RemoteVM) -> None:
        self.conn.execute(
            "UPDATE remote_vms SET host_id=?, vcpus=?, memory=?, memory_maximum=?, nested=?, mac_spoofing=? WHERE id=?",
            (vm.host_id, vm.vcpus, vm.memory, vm.memory_maximum, int(vm.nested), int(vm.mac_spoofing), vm.id),
        )

    def move(self, vm: RemoteVM, host_id: int) -> RemoteVM:
        moved = replace(vm, host_id=host_id)
        self.update(moved)
        return moved

    def set_disk(self, vm: RemoteVM, disk: str) -> RemoteVM:
        self.conn.execute("UPDATE remote_vms SET disk=? WHERE id=?", (disk, vm.id))
        return replace(vm, disk=disk)

    def remove(self, vm_id: int) -> None:
        self.conn.execute("DELETE FROM remote_vms WHERE id = ?", (vm_id,))
