"""What every use case shares: the home, the database, the host facts, and observing a VM.

The layers of the service package (dependencies point down)::

    facade.Service          the one entry point of the CLI and the API
      ├── vms               lifecycle: new, start, stop, remove, processor, version
      ├── memory            set-memory, save/restore, the balancer's hooks
      ├── guests            exec and tree through the guest agents / nested APIs
      └── network           switches, adapters, NAT (typed: net_types.py)
    core.Core               home, state, host facts, observation (this module)

Nothing here changes the host; it reads the database and observes QEMU.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import files, paths
from ..engine import process, runas
from ..engine.qmp import Monitor, hypervisor_bits
from ..errors import EngineError, HostError, NotFound, StateError
from ..host import facts as host_facts
from ..model import VMConfig, VMState, validate_name, validate_netns
from ..state import db

BOOT_SETTLE_TIMEOUT = 120.0  # a nested host's init, from its nestor's first answer to its boot line

if TYPE_CHECKING:
    from .network import Network

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())


class Core:
    def __init__(self, home: Path, netns: str | None = None, create: bool = True) -> None:
        """`create`: a missing home is made (commands that create things); otherwise refused,
        so a mistyped --home never leaves an empty home behind."""
        root = paths.check_home(home)
        if netns is not None:
            validate_netns(netns)
        if not create and not root.is_dir():
            raise NotFound(f"cannot use home directory {root}: it does not exist", hint=paths.CREATING_HINT)
        paths.check_takeover(root, create)
        self.home = paths.Home(root)
        self.netns = netns
        _prepare_home(root)
        self.conn: sqlite3.Connection = db.connect(self.home.db)
        for suffix in ("", "-wal", "-shm"):
            files.tighten(self.home.db.with_name(self.home.db.name + suffix))
        self.vms = db.VMRepo(self.conn)
        self._facts: host_facts.HostFacts | None = None
        self._daemon_ensured = False

    @functools.cached_property
    def network(self) -> Network:
        from .network import Network

        return Network(self.home, self.netns, self.conn, lambda config: self.observe(config)[0])

    @property
    def facts(self) -> host_facts.HostFacts:
        if self._facts is None:
            self._facts = host_facts.probe(qemu=False)
        return self._facts

    def settled_facts(self, timeout: float = BOOT_SETTLE_TIMEOUT) -> host_facts.HostFacts:
        """The facts once this host has booted: a nested host's nestor answers while its init
        still loads kvm (images/nested_host_init.sh keeps contract.GUEST_BOOTING until its boot
        line), and a VM started in that window would get TCG, or a refusal of its nesting."""
        from ..images.contract import GUEST_BOOTING

        deadline = time.monotonic() + timeout
        waited = False
        while Path(GUEST_BOOTING).exists() and time.monotonic() < deadline:
            waited = True
            time.sleep(0.2)
        if waited:
            self._facts = None
        return self.facts

    def ensure_daemon(self) -> None:
        """A VM runs, so the home's daemon must (the serial-log cap, the balancer): started if it
        is not, without waiting for it; looked at once per Core (once per command)."""
        if self._daemon_ensured:
            return
        self._daemon_ensured = True
        from . import daemon

        if daemon.serving(self.home):
            return  # this process is the daemon
        try:
            daemon.ensure_running(self.home, wait=False)
        except OSError as exc:
            log.warning("cannot start the home's daemon: %s", exc)

    def qemu_user(self) -> runas.QemuUser | None:
        """The unprivileged user QEMU drops to (None when nestor itself is not root); a
        HostError naming the fix if it does not exist. Checked before any host change."""
        return runas.resolve(cache=self.home.qemu_caps)

    def files(self, config: VMConfig) -> paths.VMFiles:
        return paths.VMFiles(self.home.vm_dir(config.id))

    def vm_dir(self, config: VMConfig) -> Path:
        return self.home.vm_dir(config.id)

    def running_files(self, name: str) -> paths.VMFiles:
        """The files of a VM that must be running (StateError otherwise)."""
        files = self.files(self.vms.get(validate_name(name)))
        if process.live_pid(files.dir) is None:
            raise StateError(f"vm '{name}' is not running", hint=f"nestor vm start {name}")
        return files

    def launch(self, config: VMConfig) -> dict[str, Any]:
        """How the running QEMU was launched (launch.json), or {}."""
        try:
            data: dict[str, Any] = json.loads(self.files(config).launch.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def observe(self, config: VMConfig) -> tuple[VMState, int | None]:
        """Reality, not the database: is QEMU alive, and is the guest running or paused."""
        vm_dir = self.vm_dir(config)
        pid = process.live_pid(vm_dir)
        if pid is None:
            return VMState.OFF, None
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, config.name, timeout=3.0) as mon:
                status = mon.status()
        except EngineError:
            return VMState.RUNNING, pid  # alive but busy: QMP admits one client at a time
        return (VMState.RUNNING if status == "running" else VMState.PAUSED), pid

    def quick_state(self, config: VMConfig) -> tuple[VMState, int | None]:
        """For lists: the process only, no QMP round-trip per VM."""
        pid = process.live_pid(self.vm_dir(config))
        return (VMState.OFF, None) if pid is None else (VMState.RUNNING, pid)

    def hypervisor_running(self, config: VMConfig) -> tuple[bool | None, str]:
        """Seed rule R7's trigger: does a hypervisor run inside this VM right now?

        KVM: QMP query-stats, vCPU guest_mode (instantaneous). TCG: EFER.SVME or CR4.VMXE of
        any vCPU, read through QMP (L1's KVM sets SVME while it has a live VM).
        """
        vm_dir = self.vm_dir(config)
        if process.live_pid(vm_dir) is None:
            return None, "vm is off"
        if not config.nested:
            # no VT-x/AMD-V in its CPU (nesting changes only while off): no QMP round trip, which
            # in a TCG-run L1 was most of a `vm show` of its L2 (libvirt hosts answer the same)
            return False, "nesting is off"
        launch = self.launch(config)
        try:
            with Monitor(vm_dir / paths.QMP_SOCK, config.name, timeout=5.0) as mon:
                if launch.get("accel") == "kvm":
                    return kvm_hypervisor_running(mon)
                bits = hypervisor_bits(mon.registers())
        except EngineError as exc:
            return None, f"unknown: {exc.message}"
        return any(bits), f"EFER.SVME/CR4.VMXE of {sum(bits)} of {len(bits)} vCPUs set"


KVM_SAMPLES = 5  # readings, 0.1 s apart, before "no hypervisor runs inside" under KVM


def kvm_hypervisor_running(mon: Monitor, samples: int = KVM_SAMPLES) -> tuple[bool | None, str]:
    """Under KVM, a hypervisor runs inside when a vCPU is in its guest's mode (`guest_mode`), or,
    when none is, when a vCPU's own EFER.SVME/CR4.VMXE is set (its KVM holds a live VM whose
    vCPUs are halted: an idle L3 keeps its L2's vCPUs out of guest mode nearly all the time).
    Both are instants, and a vCPU in guest mode shows its guest's registers, not its own: read
    both a few times, and any positive reading answers."""
    seen_stats = False
    for sample in range(samples):
        if sample:
            time.sleep(0.1)
        running, how = from_stats(mon.vcpu_stats())
        if running:
            return running, how
        seen_stats = seen_stats or running is not None
        bits = hypervisor_bits(mon.registers())
        if any(bits):
            return True, f"EFER.SVME/CR4.VMXE of {sum(bits)} of {len(bits)} vCPUs set (no vCPU in guest mode)"
    if not seen_stats:
        return None, "query-stats has no guest_mode"
    return False, f"query-stats guest_mode = 0 and EFER.SVME/CR4.VMXE clear on every vCPU ({samples} readings)"


def from_stats(stats: list[dict[str, Any]]) -> tuple[bool | None, str]:
    """KVM's vCPU stats: `guest_mode` says whether a vCPU is in an L2 right now.

    `nested_run` is a cumulative counter (it stays > 0 after the L2 is gone), so it is not used.
    """
    seen = False
    for provider in stats:
        for entry in provider.get("stats", []):
            if entry.get("name") == "guest_mode":
                seen = True
                if entry.get("value"):
                    return True, "query-stats guest_mode = 1"
    if not seen:
        return None, "query-stats has no guest_mode"
    return False, "query-stats guest_mode = 0 on every vCPU"


def _prepare_home(root: Path) -> None:
    """Home 0700, whatever the umask; a home left looser (an older nestor's 0755 with 0644 files)
    is tightened once, before it is used: only what nestor itself makes there (paths.OWN_ENTRIES),
    never a file or directory someone else put in it (paths.check_takeover vetted the home)."""
    try:
        loose = root.is_dir() and root.stat().st_mode & 0o777 != files.DIR_MODE
        files.private_dir(root)
        if loose:
            for entry in sorted(root.iterdir()):
                if entry.name not in paths.OWN_ENTRIES or entry.is_symlink():
                    continue
                files.tighten(entry)
                if entry.name in paths.TIGHTENED_TREES and entry.is_dir():
                    for top, dirs, names in os.walk(entry):
                        for name in (*dirs, *names):
                            files.tighten(Path(top) / name)
    except OSError as exc:
        raise HostError(f"cannot use home directory {root}: {exc.strerror or exc}",
                        hint="pass a writable directory with --home or NESTOR_HOME") from exc
