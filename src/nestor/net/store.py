"""The network rows: switches, adapters and NATs (schema: state/db.py MIGRATIONS[1] and [3]).

``netns`` columns hold the network namespace an object lives in; NULL is the root namespace.
An adapter's ``netns`` is where its tap is made (its switch's namespace), recorded so that a stop
or remove run without ``--netns`` still cleans up in the right place.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import Conflict, NotFound
from . import names

SWITCH_TYPES = ("internal", "private", "external")


@dataclass(frozen=True)
class Switch:
    id: int
    name: str
    type: str
    netns: str | None
    uplink: str | None = None
    address: str | None = None  # ADDR/PREFIX of the host on the bridge (internal, external)
    moved: str | None = None  # external --move-addresses: JSON of the uplink's addresses and routes
    tag: str = ""  # the home's identity (names.home_tag)

    @property
    def bridge(self) -> str:
        return names.bridge_name(self.tag, self.id)


@dataclass(frozen=True)
class Adapter:
    id: int
    vm_id: int
    vm: str
    name: str
    switch: str
    switch_id: int
    mac: str
    mac_spoofing: bool
    netns: str | None
    router_guard: bool = True
    dhcp_guard: bool = True
    tag: str = ""

    @property
    def tap(self) -> str:
        return names.tap_name(self.tag, self.id)


@dataclass(frozen=True)
class Nat:
    id: int
    name: str
    switch: str
    switch_id: int
    prefix: str
    dhcp: bool
    netns: str | None


def _unique(exc: sqlite3.IntegrityError) -> bool:
    return "UNIQUE" in str(exc)


class NetStore:
    def __init__(self, conn: sqlite3.Connection, tag: str) -> None:
        self.conn = conn
        self.tag = tag  # the home's identity, carried into every kernel name

    # -- switches --------------------------------------------------------------------------
    def _switch(self, row: sqlite3.Row) -> Switch:
        return Switch(id=row["id"], name=row["name"], type=row["type"], netns=row["netns"],
                      uplink=row["uplink"], address=row["address"], moved=row["moved"], tag=self.tag)

    def add_switch(self, name: str, type_: str, netns: str | None, uplink: str | None) -> Switch:
        try:
            self.conn.execute("INSERT INTO switches (name, type, netns, uplink) VALUES (?,?,?,?)",
                              (name, type_, netns, uplink))
        except sqlite3.IntegrityError as exc:
            if not _unique(exc):
                raise
            raise Conflict(f"switch '{name}' already exists", hint="choose another name (nestor switch list)") from exc
        return self.switch(name)

    def find_switch(self, name: str) -> Switch | None:
        row = self.conn.execute("SELECT * FROM switches WHERE name = ?", (name,)).fetchone()
        return self._switch(row) if row else None

    def switch(self, name: str) -> Switch:
        found = self.find_switch(name)
        if found is None:
            raise NotFound(f"switch '{name}' not found", hint="nestor switch list shows the switches")
        return found

    def switches(self) -> list[Switch]:
        return [self._switch(r) for r in self.conn.execute("SELECT * FROM switches ORDER BY name")]

    def set_switch_address(self, switch_id: int, address: str | None) -> None:
        self.conn.execute("UPDATE switches SET address = ? WHERE id = ?", (address, switch_id))

    def set_switch_moved(self, switch_id: int, moved: str | None) -> None:
        self.conn.execute("UPDATE switches SET moved = ? WHERE id = ?", (moved, switch_id))

    def remove_switch(self, switch_id: int) -> None:
        self.conn.execute("DELETE FROM switches WHERE id = ?", (switch_id,))

    # -- adapters --------------------------------------------------------------------------
    _ADAPTERS = ("SELECT a.*, v.name AS vm, s.name AS switch FROM adapters a"
                 " JOIN vms v ON v.id = a.vm_id JOIN switches s ON s.id = a.switch_id")

    def _adapter(self, row: sqlite3.Row) -> Adapter:
        return Adapter(id=row["id"], vm_id=row["vm_id"], vm=row["vm"], name=row["name"], switch=row["switch"],
                       switch_id=row["switch_id"], mac=row["mac"], mac_spoofing=bool(row["mac_spoofing"]),
                       netns=row["netns"], router_guard=bool(row["router_guard"]),
                       dhcp_guard=bool(row["dhcp_guard"]), tag=self.tag)

    def _adapters(self, where: str, args: tuple[Any, ...]) -> list[Adapter]:
        rows = self.conn.execute(f"{self._ADAPTERS} WHERE {where} ORDER BY a.id", args)
        return [self._adapter(r) for r in rows]

    def add_adapter(self, vm_id: int, name: str, switch: Switch, mac: str) -> Adapter:
        try:
            cur = self.conn.execute(
                "INSERT INTO adapters (vm_id, name, switch_id, mac, netns) VALUES (?,?,?,?,?)",
                (vm_id, name, switch.id, mac, switch.netns))
        except sqlite3.IntegrityError as exc:
            if not _unique(exc):
                raise
            if "mac" in str(exc):
                raise Conflict(f"MAC address {mac} is already used by another adapter",
                               hint="omit --mac to get a generated one") from exc
            raise Conflict(f"adapter '{name}' already exists on this vm", hint="choose another --name") from exc
        return self._adapters("a.id = ?", (cur.lastrowid,))[0]

    def mac_in_use(self, mac: str) -> bool:
        return self.conn.execute("SELECT 1 FROM adapters WHERE mac = ?", (mac,)).fetchone() is not None

    def adapters_of_vm(self, vm_id: int) -> list[Adapter]:
        return self._adapters("a.vm_id = ?", (vm_id,))

    def adapters_on_switch(self, switch_id: int) -> list[Adapter]:
        return self._adapters("a.switch_id = ?", (switch_id,))

    def adapters_in_netns(self, netns: str | None) -> list[Adapter]:
        return self._adapters("a.netns IS ?", (netns,))

    def set_guards(self, adapter_id: int, mac_spoofing: bool, router_guard: bool, dhcp_guard: bool) -> None:
        self.conn.execute("UPDATE adapters SET mac_spoofing = ?, router_guard = ?, dhcp_guard = ? WHERE id = ?",
                          (int(mac_spoofing), int(router_guard), int(dhcp_guard), adapter_id))

    def remove_adapter(self, adapter_id: int) -> None:
        self.conn.execute("DELETE FROM adapters WHERE id = ?", (adapter_id,))

    # -- NATs ------------------------------------------------------------------------------
    _NATS = ("SELECT n.*, s.name AS switch, s.netns AS netns FROM nats n JOIN switches s ON s.id = n.switch_id")

    def _nat(self, row: sqlite3.Row) -> Nat:
        return Nat(id=row["id"], name=row["name"], switch=row["switch"], switch_id=row["switch_id"],
                   prefix=row["prefix"], dhcp=bool(row["dhcp"]), netns=row["netns"])

    def add_nat(self, name: str, switch: Switch, prefix: str, dhcp: bool) -> Nat:
        try:
            self.conn.execute("INSERT INTO nats (name, switch_id, prefix, dhcp) VALUES (?,?,?,?)",
                              (name, switch.id, prefix, int(dhcp)))
        except sqlite3.IntegrityError as exc:
            if not _unique(exc):
                raise
            if "switch_id" in str(exc):
                raise Conflict(f"switch '{switch.name}' already has a NAT", hint="nestor nat list") from exc
            raise Conflict(f"nat '{name}' already exists", hint="choose another name (nestor nat list)") from exc
        return self.nat(name)

    def find_nat(self, name: str) -> Nat | None:
        row = self.conn.execute(f"{self._NATS} WHERE n.name = ?", (name,)).fetchone()
        return self._nat(row) if row else None

    def nat(self, name: str) -> Nat:
        found = self.find_nat(name)
        if found is None:
            raise NotFound(f"nat '{name}' not found", hint="nestor nat list shows the NATs")
        return found

    def nats(self) -> list[Nat]:
        return [self._nat(r) for r in self.conn.execute(f"{self._NATS} ORDER BY n.name")]

    def nat_of_switch(self, switch_id: int) -> Nat | None:
        row = self.conn.execute(f"{self._NATS} WHERE n.switch_id = ?", (switch_id,)).fetchone()
        return self._nat(row) if row else None

    def nats_in_netns(self, netns: str | None) -> list[Nat]:
        return [self._nat(r) for r in self.conn.execute(f"{self._NATS} WHERE s.netns IS ? ORDER BY n.id", (netns,))]

    def remove_nat(self, nat_id: int) -> None:
        self.conn.execute("DELETE FROM nats WHERE id = ?", (nat_id,))

    def all_adapters(self) -> Iterator[Adapter]:
        yield from self._adapters("1", ())
