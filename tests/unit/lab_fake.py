"""An in-memory level for the lab's unit tests: the Service's signatures, no QEMU, no bridge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nestor.errors import EngineError, NotFound
from nestor.lab.types import LevelAdapter, LevelReport, LevelSwitch
from nestor.service import AdapterInfo, AdapterSpec, GuardChange, MemoryChange, NatInfo, NatSpec, SwitchInfo, SwitchSpec
from nestor.service.guest_types import GuestSpec
from nestor.service.net_types import LinkState
from nestor.service.types import HostPolicy, SaveResult, VMInfo, VMSpec, VMState


class FakeLevel:
    def __init__(self) -> None:
        self.vms: dict[str, VMInfo] = {}
        self.adapters: dict[str, list[AdapterInfo]] = {}
        self.switches: dict[str, SwitchInfo] = {}
        self.nats: dict[str, NatInfo] = {}
        self.calls: list[str] = []  # what changed the level
        self.asked: list[str] = []  # what read it
        self.fail_start: set[str] = set()
        self.guests: dict[str, GuestSpec] = {}  # the GuestSpec of each disk-image guest made
        self.nesting = "allow"
        self.inside: Any = lambda name: False  # FakeLevels: does a VM run inside VM `name` of this level?

    def vm_list(self) -> list[VMInfo]:
        self.asked.append("vm_list")
        return sorted(self.vms.values(), key=lambda v: v.name)

    def level_report(self) -> LevelReport:
        self.asked.append("level_report")
        switches = [LevelSwitch(s.name, s.type.value, s.address) for s in self.switches.values()]
        adapters = [LevelAdapter(vm, a.name, a.switch, a.mac, a.mac_spoofing)
                    for vm in sorted(self.adapters) for a in self.adapters[vm]]
        vms = sorted(self.vms.values(), key=lambda v: v.name)
        return LevelReport(vms, switches, adapters, list(self.nats.values()))

    def vm_new(self, spec: VMSpec) -> Any:
        self.calls.append(f"vm_new {spec.name}")
        self.vms[spec.name] = VMInfo(spec.name, VMState.OFF, spec.vcpus, spec.memory, spec.nested, "10.0",
                                     spec.image or "appliance")
        self.adapters[spec.name] = []
        return self.vms[spec.name]

    def vm_new_request(self, spec: VMSpec, guest: GuestSpec) -> Any:
        """As the Service's: a stored image (not a built-in one) makes a disk-image guest."""
        if spec.image in (None, "appliance", "nested-host"):
            return self.vm_new(spec)
        assert not spec.append and spec.run_script is None and spec.host is None  # what the Service refuses
        self.calls.append(f"vm_new_guest {spec.name}")
        self.guests[spec.name] = guest
        self.vms[spec.name] = VMInfo(spec.name, VMState.OFF, spec.vcpus, spec.memory, spec.nested, "10.0", spec.image)
        self.adapters[spec.name] = []
        return self.vms[spec.name]

    def _set(self, name: str, **changes: Any) -> VMInfo:
        from dataclasses import replace

        if name not in self.vms:
            raise NotFound(f"no vm '{name}'")
        self.vms[name] = replace(self.vms[name], **changes)
        return self.vms[name]

    def vm_start(self, name: str) -> VMInfo:
        self.calls.append(f"vm_start {name}")
        if name in self.fail_start:
            raise EngineError(f"vm '{name}': QEMU exited")
        return self._set(name, state=VMState.RUNNING)

    def vm_show(self, name: str) -> VMInfo:
        from dataclasses import replace

        if name not in self.vms:
            raise NotFound(f"vm '{name}' not found")
        vm = self.vms[name]
        running = self.inside(name) if vm.state is VMState.RUNNING else None
        return replace(vm, hypervisor_running=running if vm.nested else None)

    def vm_save(self, name: str) -> SaveResult:
        from nestor.errors import PolicyError, StateError

        self.calls.append(f"vm_save {name}")
        if self.vms[name].state is not VMState.RUNNING:
            raise StateError(f"vm '{name}' is not running")
        if self.vm_show(name).hypervisor_running:
            raise PolicyError(f"vm '{name}' cannot be saved (rules R12-R14)", rule="R12-R14")
        self._set(name, state=VMState.SAVED)
        return SaveResult(name, f"/saved/{name}", 1 << 20)

    def host_policy(self) -> HostPolicy:
        return HostPolicy(nesting=self.nesting)

    def vm_stop(self, name: str, turn_off: bool = False, timeout: float = 30.0) -> None:
        self.calls.append(f"vm_stop {name}")
        self._set(name, state=VMState.OFF)

    def vm_remove(self, name: str, force: bool = False) -> None:
        self.calls.append(f"vm_remove {name}")
        if name not in self.vms:
            raise NotFound(f"no vm '{name}'")
        del self.vms[name]
        del self.adapters[name]

    def vm_set_processor(self, name: str, count: int | None = None, nested: bool | None = None) -> None:
        self.calls.append(f"vm_set_processor {name}")
        self._set(name, **({"vcpus": count} if count else {}), **({"nested": nested} if nested is not None else {}))

    def vm_set_memory(self, name: str, change: MemoryChange) -> None:
        self.calls.append(f"vm_set_memory {name}")
        self._set(name, **({"memory": change.startup} if change.startup else {}),
                  **({"dynamic_memory": change.dynamic} if change.dynamic is not None else {}))

    def switch_list(self) -> list[SwitchInfo]:
        self.asked.append("switch_list")
        return list(self.switches.values())

    def switch_new(self, spec: SwitchSpec) -> SwitchInfo:
        self.calls.append(f"switch_new {spec.name}")
        self.switches[spec.name] = SwitchInfo(spec.name, spec.type, None, f"br-{spec.name}", None, None, 0, None, LinkState.UP)
        return self.switches[spec.name]

    def switch_set_ip(self, name: str, address: str) -> SwitchInfo:
        from dataclasses import replace

        self.calls.append(f"switch_set_ip {name}")
        self.switches[name] = replace(self.switches[name], address=address)
        return self.switches[name]

    def switch_remove(self, name: str, force: bool = False) -> None:
        self.calls.append(f"switch_remove {name}")
        if name not in self.switches:
            raise NotFound(f"no switch '{name}'")
        del self.switches[name]

    def nat_list(self) -> list[NatInfo]:
        """As the Service's: each NAT made real again first (a dnsmasq that died runs again)."""
        from dataclasses import replace

        self.asked.append("nat_list")
        for name, nat in self.nats.items():
            if nat.dhcp and nat.dnsmasq_pid is None:
                self.calls.append(f"dnsmasq_start {name}")
                self.nats[name] = replace(nat, dnsmasq_pid=4242)
        return list(self.nats.values())

    def nat_new(self, spec: NatSpec) -> NatInfo:
        self.calls.append(f"nat_new {spec.name}")
        assert spec.switch in self.switches and self.switches[spec.switch].address is not None
        self.nats[spec.name] = NatInfo(spec.name, spec.switch, spec.prefix, None, None, spec.dhcp,
                                       dnsmasq_pid=4242 if spec.dhcp else None)
        return self.nats[spec.name]

    def nat_remove(self, name: str) -> None:
        self.calls.append(f"nat_remove {name}")
        if name not in self.nats:
            raise NotFound(f"no nat '{name}'")
        del self.nats[name]

    def adapter_list(self, vm: str) -> list[AdapterInfo]:
        self.asked.append(f"adapter_list {vm}")
        return list(self.adapters[vm])

    def adapter_add(self, vm: str, spec: AdapterSpec) -> AdapterInfo:
        self.calls.append(f"adapter_add {vm} {spec.switch}")
        n = len(self.adapters[vm])
        info = AdapterInfo(vm, f"net{n}", spec.switch, spec.mac or f"52:54:00:00:00:{len(self.calls) % 256:02x}",
                           False, True, True, f"tap{n}", None)
        self.adapters[vm].append(info)
        return info

    def adapter_set(self, vm: str, name: str, change: GuardChange) -> AdapterInfo:
        from dataclasses import replace

        self.calls.append(f"adapter_set {vm} {name}")
        found = [i for i, a in enumerate(self.adapters[vm]) if a.name == name]
        self.adapters[vm][found[0]] = replace(self.adapters[vm][found[0]], mac_spoofing=bool(change.mac_spoofing))
        return self.adapters[vm][found[0]]

    def adapter_remove(self, vm: str, name: str) -> None:
        self.calls.append(f"adapter_remove {vm} {name}")
        self.adapters[vm] = [a for a in self.adapters[vm] if a.name != name]


class FakeLevels:
    """Levels by path; a level inside a VM exists while that VM exists (and is reset when it goes)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.levels: dict[str, FakeLevel] = {"": FakeLevel()}
        self.files: dict[tuple[str, str], str] = {}

    def _vm_exists(self, path: str) -> bool:
        parent, _, name = path.rpartition("/")
        return parent in self.levels and name in self.levels[parent].vms

    @contextmanager
    def open(self, path: str) -> Iterator[FakeLevel]:
        self.prune()
        if path:
            parent, _, name = path.rpartition("/")
            vm = self.levels[parent].vms.get(name) if parent in self.levels else None
            if vm is None or vm.state is not VMState.RUNNING:
                from nestor.errors import GuestError

                raise GuestError(f"level {path} does not answer")
            self.levels.setdefault(path, FakeLevel())
        level = self.levels[path]
        level.inside = lambda name: any(v.state is VMState.RUNNING
                                        for v in self.levels.get(f"{path}/{name}" if path else name, FakeLevel()).vms.values())
        yield level

    def wait_ready(self, path: str, timeout: float) -> None:
        with self.open(path):
            pass

    def write_file(self, level: str, dest: str, text: str) -> None:
        self.files[(level, dest)] = text

    def prune(self) -> None:
        """Levels whose VM is gone go with it (as a removed L1 takes its L2s)."""
        for path in sorted(self.levels, key=len):
            if path and not self._vm_exists(path):
                del self.levels[path]
