"""`lab status` and `lab inventory`: the lab's tree with each object's state, and its addresses."""

from __future__ import annotations

import ipaddress
from typing import Any

from .observe import Seen
from .spec import Lab, Level, level_name


def status(lab: Lab, seen: dict[str, Seen | None]) -> dict[str, Any]:
    return {"lab": lab.name, "levels": [_level(level, seen.get(level.path)) for level in lab.levels()]}


def _level(level: Level, seen: Seen | None) -> dict[str, Any]:
    why: str | None = "its VM is not running" if seen is None else seen.error
    vms = []
    for vm in level.vms.values():
        got = None if seen is None else seen.vms.get(vm.name)
        vms.append({"name": vm.name, "path": level.vm_path(vm.name), "image": vm.image,
                    "state": "missing" if seen is not None and got is None else (got.state if got else "unknown"),
                    "cpus": vm.cpus, "memory": vm.memory, "nested": vm.nested,
                    "addresses": addresses(level, vm.name, seen)})
    switches = [{"name": s.name, "type": s.type, "address": s.address,
                 "state": "unknown" if seen is None else ("present" if s.name in seen.switches else "missing")}
                for s in level.switches.values()]
    nats = [{"name": n.name, "switch": n.switch, "prefix": n.prefix, "dhcp": n.dhcp,
             "state": "unknown" if seen is None else ("present" if n.name in seen.nats else "missing")}
            for n in level.nats.values()]
    return {"level": level.path, "level_name": level_name(level.path), "reachable": seen is not None and why is None,
            "error": why, "switches": switches, "nats": nats, "vms": vms}


def addresses(level: Level, name: str, seen: Seen | None) -> list[str]:
    """A VM's IPv4 addresses: its static one from the file, and any DHCP lease of its adapters' MACs."""
    vm = level.vms[name]
    found: list[str] = []
    if vm.adapters and vm.adapters[0].ip is not None:
        found.append(str(ipaddress.IPv4Interface(vm.adapters[0].ip).ip))
    if seen is not None and name in seen.vms:
        macs = {a.mac.lower() for a in seen.vms[name].adapters}
        for nat in seen.nats.values():
            found.extend(ip for mac, ip in nat.leases if mac.lower() in macs and ip not in found)
    return found


def inventory(lab: Lab, seen: dict[str, Seen | None]) -> dict[str, Any]:
    """Ansible's JSON inventory (`ansible-inventory -i script`): one group per level, hostvars with
    the address; the VMs of a level below L0 are reached through that level (ansible_host is their
    address on its network)."""
    groups: dict[str, Any] = {"all": {"children": []}}
    hostvars: dict[str, Any] = {}
    for level in lab.levels():
        group = "l0" if not level.path else "in_" + level.path.replace("/", "_").replace("-", "_")
        hosts = []
        for vm in level.vms.values():
            path = level.vm_path(vm.name)
            found = addresses(level, vm.name, seen.get(level.path))
            hosts.append(path)
            hostvars[path] = {"nestor_path": path, "nestor_level": level.depth + 1, "nestor_image": vm.image,
                              **({"ansible_host": found[0]} if found else {}), "nestor_addresses": found}
        if hosts:
            groups[group] = {"hosts": hosts}
            groups["all"]["children"].append(group)
    groups["_meta"] = {"hostvars": hostvars}
    return groups
