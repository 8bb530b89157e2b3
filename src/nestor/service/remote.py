"""VMs on libvirt hosts behind the same facade as local ones (issue 12).

The use cases live in nestor.remote.hosts (libvirt through its binding, the seed's rules from
policy/); this module turns their results into the service's types, so the CLI and the API need
nothing special for a VM on another machine. The binding is loaded only when a libvirt host or a
VM on one is involved (`vm list` and `tree` do not pay for it otherwise; an L1 has no binding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import HostError, InvalidInput
from ..model import VMState
from .core import Core
from .types import (
    HostInfo,
    HostTree,
    MemoryChange,
    MemoryOutcome,
    MemoryResult,
    MoveResult,
    NewVM,
    ProcessorResult,
    SaveResult,
    StopHow,
    StopResult,
    TreeNode,
    VMInfo,
    VMSpec,
)

if TYPE_CHECKING:
    from ..remote.hosts import Hosts, HostView, RemoteVMInfo
    from ..remote.nats import RemoteNats

Progress = Callable[[str], None]
STATES = {"running": VMState.RUNNING, "paused": VMState.PAUSED, "shutting-down": VMState.RUNNING}
STOP_HOW = {"shut down": StopHow.SHUT_DOWN, "turned off": StopHow.TURNED_OFF}


def host_info(view: HostView, vm_names: list[str] | None = None) -> HostInfo:
    data = view.to_json()
    data["cpu_modes"] = list(data.get("cpu_modes") or [])
    data["vm_names"] = vm_names or []
    known = HostInfo.__dataclass_fields__
    return HostInfo(**{k: v for k, v in data.items() if k in known})


def vm_info(r: RemoteVMInfo) -> VMInfo:
    state = STATES.get(r.state, VMState.SAVED if r.saved else VMState.OFF)
    return VMInfo(
        name=r.name, state=state, vcpus=r.vcpus, memory=r.memory, nested=r.nested, config_version="-",
        image=None, hypervisor_running=r.hypervisor_running, hypervisor_detection=r.hypervisor_detection,
        memory_maximum=r.memory_maximum, memory_room=r.memory_maximum, memory_assigned=r.memory_assigned,
        memory_demand=(r.memory_assigned - r.memory_available) if r.memory_assigned and r.memory_available else None,
        host=r.host, host_state=None if r.state in ("running", "paused", "off") else r.state,
    )


class Remote:
    def __init__(self, core: Core) -> None:
        self.core = core
        self._hosts: Hosts | None = None

    @property
    def hosts(self) -> Hosts:
        if self._hosts is None:
            try:
                from ..remote.hosts import Hosts
            except ImportError as exc:  # the `libvirt` extra is not installed (an L1's payload has no binding)
                raise HostError(f"the libvirt Python binding is not installed ({exc})",
                                hint="bash scripts/setup installs it (pip install -e '.[libvirt]')") from exc
            self._hosts = Hosts(self.core.conn)
        return self._hosts

    @property
    def nats(self) -> RemoteNats:
        from ..remote.nats import RemoteNats

        return RemoteNats(self.hosts)

    def owns_nat(self, name: str) -> bool:
        """Is NAME a NAT on a libvirt host? (no binding loaded)"""
        return self.core.conn.execute("SELECT 1 FROM remote_nats WHERE name = ?", (name,)).fetchone() is not None

    def has_nats(self) -> bool:
        return self.core.conn.execute("SELECT 1 FROM remote_nats LIMIT 1").fetchone() is not None

    def owns(self, name: str) -> bool:
        """Is NAME a VM on a libvirt host? (one indexed query; no binding loaded)"""
        return self.core.conn.execute("SELECT 1 FROM remote_vms WHERE name = ?", (name,)).fetchone() is not None

    def has_vms(self) -> bool:
        return self.core.conn.execute("SELECT 1 FROM remote_vms LIMIT 1").fetchone() is not None

    def has_hosts(self) -> bool:
        return self.core.conn.execute("SELECT 1 FROM hosts LIMIT 1").fetchone() is not None

    # -- hosts ----------------------------------------------------------------------------------
    def host_add(self, name: str, uri: str) -> HostInfo:
        return host_info(self.hosts.add(name, uri))

    def host_list(self) -> list[HostInfo]:
        return [host_info(view) for view in self.hosts.host_list()]

    def host_show(self, name: str) -> HostInfo:
        view, vms = self.hosts.show(name)
        return host_info(view, [vm.name for vm in vms])

    def host_remove(self, name: str) -> None:
        self.hosts.remove(name)

    # -- VMs --------------------------------------------------------------------------------------
    def vm_new(self, spec: VMSpec) -> NewVM:
        if spec.image or spec.run_script or spec.config_version or spec.switches:
            raise InvalidInput("a VM on a libvirt host takes no --image/--run/--config-version/--switch",
                               hint="on a libvirt host use --disk, --kernel/--initrd/--append (its files) and --network")
        assert spec.host is not None
        host = spec.host
        if spec.network:
            nat = self.nats.repo.find(spec.network)
            if nat is not None and host == "auto":  # a nestor NAT lives on one host: the VM goes there
                host = self.hosts.hosts.by_id(nat.host_id).name
            self.nats.check_network(spec.network, host)
        vm, chosen, warnings = self.hosts.vm_new(
            spec.name, host, vcpus=spec.vcpus, memory=spec.memory, nested=spec.nested, maximum=spec.maximum,
            disk=spec.disk, network=spec.network, kernel=spec.kernel, initrd=spec.initrd, append=spec.append or None)
        placement = f"placed on host '{chosen.host}': {chosen.reason}" if chosen else None
        return NewVM(self.vm_show(vm.name), warnings, placement)

    def vm_list(self) -> list[VMInfo]:
        return [vm_info(r) for r in self.hosts.vm_list()]

    def vm_show(self, name: str) -> VMInfo:
        return vm_info(self.hosts.vm_show(name))

    def vm_start(self, name: str) -> VMInfo:
        return vm_info(self.hosts.vm_start(name))

    def vm_stop(self, name: str, turn_off: bool, timeout: float) -> StopResult:
        how = self.hosts.vm_stop(name, turn_off=turn_off, timeout=timeout)
        return StopResult(name, STOP_HOW.get(how, StopHow.TIMED_OUT), timeout)

    def vm_remove(self, name: str, force: bool) -> None:
        self.hosts.vm_remove(name, force=force)

    def vm_set_processor(self, name: str, count: int | None, nested: bool | None) -> ProcessorResult:
        warnings = self.hosts.vm_set_processor(name, count=count, nested=nested)
        return ProcessorResult(self.vm_show(name), warnings)

    def vm_set_memory(self, name: str, change: MemoryChange) -> MemoryResult:
        others = (change.dynamic, change.minimum, change.maximum, change.buffer)
        if change.startup is None or any(v is not None for v in others):
            raise InvalidInput(f"vm '{name}' is on a libvirt host: only --startup can be set there",
                               hint=f"nestor vm set-memory {name} --startup SIZE")
        message = self.hosts.vm_set_memory(name, change.startup)
        live = "live" in message
        return MemoryResult(name, MemoryOutcome.RESIZED if live else MemoryOutcome.UPDATED, change.startup)

    def vm_save(self, name: str) -> SaveResult:
        self.hosts.vm_save(name)
        _, host = self.hosts.get_vm(name)
        return SaveResult(name, f"libvirt managed save on host '{host.name}'", 0)

    def vm_move(self, name: str, host: str, progress: Progress) -> MoveResult:
        before, source = self.hosts.get_vm(name)
        message = self.hosts.vm_move(name, host, progress)
        after, _ = self.hosts.get_vm(name)
        return MoveResult(name, source.name, host, live=" (live)" in message,
                          disk_copied_to=after.disk if after.disk != before.disk else None)

    def tree(self, timeout: float = 30.0) -> list[HostTree]:
        """Every libvirt host, nestor's VMs there, and the levels inside each running VM with
        nesting on, read from the nestor inside through its API channel (as for local L1s)."""
        result = []
        for node in self.hosts.tree():
            vms = []
            for vm in node["vms"]:
                entry = TreeNode(vm["name"], vm["level"], vm["state"], vm["vcpus"], vm["memory"], vm["nested"])
                if vm["descend"]:
                    self._descend(entry, timeout)
                vms.append(entry)
            result.append(HostTree(node["host"], node["uri"], node["level"], node["reachable"], node["error"], vms))
        return result

    def _descend(self, node: TreeNode, timeout: float) -> None:
        from ..client import Client
        from .guests import descend

        descend(node, lambda: Client(transport=self.hosts.api_transport(node.name, timeout), timeout=timeout), timeout)
