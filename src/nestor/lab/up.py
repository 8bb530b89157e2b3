"""`lab up`: reconcile every level to the file, through one handle per level.

Level by level, top down: a level's removals, then its switches and NATs, then its VMs, each VM
in its own thread (independent VMs come up in parallel); a VM with a level of its own waits for
its nestor and reconciles that level in the same thread. Every object is recorded as the lab's
before it is made (owners.py). On a failure nothing is rolled back: the other VMs finish, the run
reports what failed, and the next `lab up` converges from what is there (docs/decisions.md).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import faults
from ..errors import NestorError, NotFound
from ..images.contract import GUEST_HOME, cmdline_params
from ..service import AdapterSpec, GuardChange, MemoryChange, NatSpec, SwitchSpec, SwitchType, VMSpec
from ..service.guest_types import GuestSpec
from .levels import Levels
from .observe import Seen, observe
from .owners import Owners
from .plan import Action, Op, plan_level
from .spec import Lab, Level, VMDef, level_name

Progress = Callable[[str], None]
READY_TIMEOUT = 300.0  # a nested-host's nestor answering after its start, under TCG


@dataclass
class Outcome:
    done: list[Action] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, action: Action) -> None:
        with self.lock:
            self.done.append(action)

    def fail(self, what: str) -> None:
        with self.lock:
            self.failed.append(what)


class Up:
    def __init__(self, lab: Lab, levels: Levels, owners: Owners, progress: Progress) -> None:
        self.lab = lab
        self.levels = levels
        self.owners = owners
        self.progress = progress
        self.outcome = Outcome()

    def run(self) -> Outcome:
        self.level(self.lab.root)
        return self.outcome

    def say(self, path: str, text: str) -> None:
        self.progress(f"{path or 'L0'}: {text}")

    # -- one level -------------------------------------------------------------------------
    def level(self, level: Level) -> None:
        with self.levels.open(level.path) as hv:
            seen = observe(hv, set(level.vms))
            actions = plan_level(level, seen, self.owners.objects(self.lab.name)).actions
            self._removals(hv, level, actions)
            self._network(hv, level, actions)
            faults.point("lab-up:after-network")
        vms = [vm for vm in level.vms.values()]
        if len(vms) == 1:
            self._guarded(level, vms[0], seen, actions)
            return
        with ThreadPoolExecutor(max_workers=max(1, len(vms)), thread_name_prefix="lab-vm") as pool:
            for future in [pool.submit(self._guarded, level, vm, seen, actions) for vm in vms]:
                future.result()

    def _claim(self, level: Level, kind: str, name: str) -> None:
        self.owners.claim(self.lab.name, level.path, kind, name)
        faults.point("lab-up:after-claim")

    def _removals(self, hv: Any, level: Level, actions: list[Action]) -> None:
        for kind in ("vm", "nat", "switch"):
            for a in actions:
                if a.kind != kind or a.op not in (Op.REMOVE, Op.REPLACE) or (kind == "vm" and a.op is Op.REPLACE):
                    continue
                self.say(level.vm_path(a.name) if kind == "vm" else level.path, f"removing {kind} {a.name} ({a.reason})")
                try:
                    if kind == "vm":
                        hv.vm_remove(a.name, force=True)
                        self.owners.release_below(level.vm_path(a.name))
                    elif kind == "nat":
                        hv.nat_remove(a.name)
                    else:
                        hv.switch_remove(a.name, force=True)
                except NotFound:
                    pass
                if a.op is Op.REMOVE:
                    self.owners.release(level.path, kind, a.name)
                    self.outcome.add(a)

    def _network(self, hv: Any, level: Level, actions: list[Action]) -> None:
        ops = {(a.kind, a.name): a for a in actions}
        for s in level.switches.values():
            a = ops[("switch", s.name)]
            if a.op in (Op.CREATE, Op.REPLACE):
                self.say(level.path, f"switch {s.name}: creating ({a.reason})")
                self._claim(level, "switch", s.name)
                hv.switch_new(SwitchSpec(s.name, SwitchType(s.type)))
            if a.op in (Op.CREATE, Op.REPLACE, Op.CHANGE) and s.address is not None:
                hv.switch_set_ip(s.name, s.address)
            if a.op is not Op.KEEP:
                self.outcome.add(a)
        for n in level.nats.values():
            a = ops[("nat", n.name)]
            if a.op in (Op.CREATE, Op.REPLACE):
                self.say(level.path, f"nat {n.name}: creating ({a.reason})")
                self._claim(level, "nat", n.name)
                hv.nat_new(NatSpec(n.name, n.switch, n.prefix, dhcp=n.dhcp))
                self.outcome.add(a)
            elif a.op is Op.CHANGE:
                self.say(level.path, f"nat {n.name}: {a.reason}")
                hv.nat_list()  # `nat list` makes the level's NATs real again (each dnsmasq, the ruleset)
                self.outcome.add(a)

    # -- one VM (a thread of its own) ------------------------------------------------------
    def _guarded(self, level: Level, vm: VMDef, seen: Seen, actions: list[Action]) -> None:
        path = level.vm_path(vm.name)
        try:
            self._vm(level, vm, seen, actions)
        except NestorError as exc:
            self.say(path, f"failed: {exc.message}")
            self.outcome.fail(f"{path}: {exc.message}")

    def _vm(self, level: Level, vm: VMDef, seen: Seen, actions: list[Action]) -> None:
        path = level.vm_path(vm.name)
        mine = [a for a in actions if (a.kind == "vm" and a.name == vm.name)
                or (a.kind == "adapter" and a.name.partition("/")[0] == vm.name)]
        op = next(a for a in mine if a.kind == "vm")
        script = None
        guest = None
        if op.op in (Op.CREATE, Op.REPLACE):
            # before the level's handle is open: below L1 the write goes through the same API
            # channels, which the handle holds ("another command is using its nestor API channel")
            if vm.run is not None:
                script = self._file_path(level, vm, "sh")
                self.levels.write_file(level.path, script, vm.run)
            if vm.disk_guest:
                guest = self._guest_files(level, vm)
        with self.levels.open(level.path) as hv:
            if op.op is Op.REPLACE:
                self.say(path, f"replacing ({op.reason})")
                hv.vm_remove(vm.name, force=True)
                self.owners.release_below(path)
            if op.op in (Op.CREATE, Op.REPLACE):
                self._create(hv, level, vm, script, guest)
            else:
                if op.op is Op.CHANGE:
                    self._change(hv, path, vm, seen.vms[vm.name].state)
                self._adapters(hv, level, vm, seen, [a for a in mine if a.kind == "adapter"])
            if op.op is not Op.KEEP:
                self.say(path, "starting")
                hv.vm_start(vm.name)
                self.say(path, "started")
                self.outcome.add(op)
        if vm.inner is not None:
            self.say(path, "waiting for its nestor")
            self.levels.wait_ready(path, READY_TIMEOUT)
            self.level(vm.inner)

    def _create(self, hv: Any, level: Level, vm: VMDef, script: str | None, guest: GuestSpec | None = None) -> None:
        path = level.vm_path(vm.name)
        self.say(path, "creating")
        self._claim(level, "vm", vm.name)
        if guest is not None:
            # a disk-image guest: its stored image, cloud-init; no adapter of `vm new`'s own (the
            # default switch): the file's adapters are added below, as for every VM
            hv.vm_new_request(VMSpec(vm.name, vcpus=vm.cpus, memory=vm.memory, nested=vm.nested, image=vm.image), guest)
        else:
            hv.vm_new(VMSpec(vm.name, vcpus=vm.cpus, memory=vm.memory, nested=vm.nested, image=vm.image,
                             append=" ".join(boot_params(level, vm)), run_script=script, host=vm.host))
        for adapter in vm.adapters:
            info = hv.adapter_add(vm.name, AdapterSpec(adapter.switch, adapter.mac))
            if adapter.mac_spoofing:
                hv.adapter_set(vm.name, info.name, GuardChange(mac_spoofing=True))
        if vm.dynamic is not None:
            hv.vm_set_memory(vm.name, MemoryChange(dynamic=True, minimum=vm.dynamic.minimum, maximum=vm.dynamic.maximum,
                                                   buffer=vm.dynamic.buffer))

    def _file_path(self, level: Level, vm: VMDef, suffix: str) -> str:
        """Where a file a VM is made with goes at its level (its run script, its keys, its user-data)."""
        if not level.path:
            return str(self.levels.home / "labs" / self.lab.name / f"{vm.name}.{suffix}")
        # the level's files directory (HOME/uploads): the only place an API caller may name a file in
        return f"{GUEST_HOME}/uploads/labs/{self.lab.name}/{vm.name}.{suffix}"

    def _guest_files(self, level: Level, vm: VMDef) -> GuestSpec:
        """A disk-image guest's cloud-init, as files at its level (the level reads its keys file again
        at each start, so it stays): the file's keys, one a line, as its user's authorized keys; or
        the file's user-data; or neither (the level's own default key, as `vm new --image`)."""
        key_file = user_data = None
        if vm.cloud_init is not None:
            user_data = self._file_path(level, vm, "user-data")
            self.levels.write_file(level.path, user_data, vm.cloud_init)
        elif vm.ssh_keys:
            key_file = self._file_path(level, vm, "keys.pub")
            self.levels.write_file(level.path, key_file, "".join(f"{k.strip()}\n" for k in vm.ssh_keys))
        return GuestSpec(ssh_key=Path(key_file) if key_file else None, cloud_init=Path(user_data) if user_data else None,
                         no_network=True)

    def _change(self, hv: Any, path: str, vm: VMDef, state: str) -> None:
        if state != "off":
            self.say(path, "stopping to change it")
            hv.vm_stop(vm.name, turn_off=True)
        hv.vm_set_processor(vm.name, count=vm.cpus, nested=vm.nested)
        hv.vm_set_memory(vm.name, MemoryChange(startup=vm.memory, dynamic=vm.dynamic is not None))

    def _adapters(self, hv: Any, level: Level, vm: VMDef, seen: Seen, actions: list[Action]) -> None:
        have = seen.vms[vm.name].adapters
        for a in actions:
            index = int(a.name.partition("/")[2])
            if a.op in (Op.REMOVE, Op.REPLACE):
                hv.adapter_remove(vm.name, have[index].name)
            if a.op in (Op.CREATE, Op.REPLACE):
                want = vm.adapters[index]
                info = hv.adapter_add(vm.name, AdapterSpec(want.switch, want.mac))
                if want.mac_spoofing:
                    hv.adapter_set(vm.name, info.name, GuardChange(mac_spoofing=True))
            if a.op is Op.CHANGE:
                hv.adapter_set(vm.name, have[index].name, GuardChange(mac_spoofing=vm.adapters[index].mac_spoofing))
            if a.op is not Op.KEEP:
                self.outcome.add(a)


def boot_params(level: Level, vm: VMDef) -> list[str]:
    """The guest's kernel parameters: its hostname, and its first adapter's address (static, or DHCP)."""
    if not vm.adapters:
        return cmdline_params(hostname=vm.name)
    first = vm.adapters[0]
    if first.ip is not None:
        gateway = first.gateway
        switch = level.switches[first.switch]
        if gateway is None and switch.address is not None:
            gateway = str(ipaddress.IPv4Interface(switch.address).ip)
        return cmdline_params(hostname=vm.name, ip=first.ip, gw=gateway)
    return cmdline_params(hostname=vm.name, dhcp=first.dhcp)


def where(path: str) -> str:
    return level_name(path)
