"""The main job (DESIGN.md section 5): L0 → L1 (nested-host, nesting on) → L2 (appliance), timed.

nestor drives every level: L0's service starts l1; l1's own nestor, reached through the guest
agent, starts l2. Everything network-related lives in a namespace named after the home.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import guest
from .engine import process
from .errors import GuestError, HostError, NestorError, NotFound
from .images.appliance import BOOT_LINE as L2_BOOT_LINE
from .images.appliance import cmdline_params
from .model import BootSource
from .net.host import NETNS_DIR
from .net.run import run
from .service import Nestor

L1, L2 = "l1", "l2"
L1_MEMORY, L1_VCPUS = 1 << 30, 2
L2_MEMORY = "256M"
SWITCH = "qs0"
L0_ADDRESS, L1_ADDRESS = "10.77.0.1", "10.77.0.2"
L1_APPEND = " ".join(cmdline_params(ip=f"{L1_ADDRESS}/24", gw=L0_ADDRESS))
NAT_SWITCH, NAT_GATEWAY, NAT_PREFIX = "nat0", "192.168.100.1/24", "192.168.100.0/24"
L2_SCRIPT = "/tmp/l2-ping.sh"
# Runs in l2 once it is up (after its DHCP lease): the proof that l2 reaches l0 through l1's NAT.
L2_PING = f"""#!/bin/sh
if ping -c 3 -W 3 {L0_ADDRESS} >/dev/null; then echo "l2-ping: ok"; else echo "l2-ping: failed"; fi
"""
L1_BOOT_TIMEOUT = 180.0
L2_BOOT_TIMEOUT = 180.0
Progress = Callable[[str], None]


def netns_for(home: Path) -> str:
    """One namespace per home, so quickstarts in different homes do not collide."""
    return "nestor-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


@dataclass
class Result:
    ok: bool = False
    steps: list[tuple[str, float]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    tree: dict[str, Any] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": [{"step": s, "seconds": round(t, 2)} for s, t in self.steps],
                "facts": self.facts, "tree": self.tree, "error": self.error}


class Quickstart:
    def __init__(self, home: Path, progress: Progress) -> None:
        self.home = home
        self.netns = netns_for(home)
        self.progress = progress
        self.result = Result()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.progress(f"{name} …")
        start = time.monotonic()
        yield
        elapsed = time.monotonic() - start
        self.result.steps.append((name, elapsed))
        self.progress(f"{name}: {elapsed:.1f} s")

    def run(self, keep: bool = False) -> Result:
        try:
            self._run()
            self.result.ok = True
        except BaseException as exc:  # also Ctrl-C: leave nothing behind unless asked to
            self.result.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            if not keep:
                try:
                    self.teardown()
                except NestorError as cleanup:
                    self.progress(f"teardown after the failure failed too: {cleanup.message}")
            raise
        if not keep:
            with self.step("teardown"):
                self.teardown()
        return self.result

    def _run(self) -> None:
        with self.step("host check"):
            service = Nestor(self.home)
            failed = [c for c in service.host_check()[1] if not c.ok and c.name in ("qemu", "nested virtualization")]
            if failed:
                raise HostError(f"host check failed: {failed[0].name}: {failed[0].detail}", hint=failed[0].fix)
        with self.step("images"):
            service.image_build("nested-host", self.progress)
        with self.step("clean leftovers"):
            self.teardown()
        with self.step("namespace"):
            run(["ip", "netns", "add", self.netns])
            service = Nestor(self.home, netns=self.netns)
        with self.step("l0 switch"):
            service.network.switch_new(SWITCH, "internal")
            service.network.switch_set_ip(SWITCH, f"{L0_ADDRESS}/24")
        with self.step("l1 start"):
            service.vm_new(L1, vcpus=L1_VCPUS, memory=L1_MEMORY, nested=True,
                           boot=BootSource(image="nested-host", append=L1_APPEND))
            service.network.adapter_add(L1, SWITCH)  # MAC spoofing off: the guard is on
            service.vm_start(L1)
        with self.step("l1 boot"):
            self._wait_l1(service)
        self.result.facts["hypervisor running in l1 before l2"] = service.vm_show(L1).hypervisor_running
        with self.step("l1 NAT network (nestor inside l1)"):
            self._in_l1(service, "nestor", "switch", "new", NAT_SWITCH, "--type", "internal")
            self._in_l1(service, "nestor", "switch", "set-ip", NAT_SWITCH, NAT_GATEWAY)
            self._in_l1(service, "nestor", "nat", "new", NAT_SWITCH, "--switch", NAT_SWITCH, "--prefix", NAT_PREFIX, "--dhcp")
        with self.step("l2 start (nestor inside l1)"):
            with guest.agent(service, L1, timeout=30) as agent:
                agent.write_file(L2_SCRIPT, L2_PING.encode())
            self._in_l1(service, "nestor", "vm", "new", L2, "--memory", L2_MEMORY, "--switch", NAT_SWITCH,
                        "--append", "nestor.dhcp=1", "--run", L2_SCRIPT)
            self._in_l1(service, "nestor", "vm", "start", L2)
        with self.step("l2 boot"):
            self._in_l1(service, "nestor", "vm", "log", L2, "--until", L2_BOOT_LINE,
                        "--timeout", f"{L2_BOOT_TIMEOUT:g}", timeout=L2_BOOT_TIMEOUT + 30)
        self.result.facts["hypervisor running in l1 with l2"] = service.vm_show(L1).hypervisor_running
        with self.step("l2 pings l0 through l1's NAT"):
            log = self._in_l1(service, "nestor", "vm", "log", L2, "--until", "l2-ping: ", "--timeout", "60", timeout=90)
            result = log.rsplit("l2-ping: ", 1)[1].split()[0]
            self.result.facts["l2 reached l0 through NAT"] = result == "ok"
            if result != "ok":
                raise GuestError(f"l2 could not ping {L0_ADDRESS} through l1's NAT", hint="nestor vm exec l1 -- nestor vm log l2")
        with self.step("tree"):
            self.result.tree = guest.tree(service)

    def _wait_l1(self, service: Nestor) -> None:
        from .images.nested_host import BOOT_LINE

        files = service.vm_paths(L1)
        deadline = time.monotonic() + L1_BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if files.serial_log.exists() and BOOT_LINE in files.serial_log.read_text(errors="replace"):
                return
            if process.live_pid(files.dir) is None:
                raise GuestError("l1 stopped while booting", hint=f"see {files.serial_log}")
            time.sleep(0.2)
        raise GuestError(f"l1 did not boot within {L1_BOOT_TIMEOUT:.0f} s", hint=f"see {files.serial_log}")

    def _in_l1(self, service: Nestor, *argv: str, timeout: float = 120.0) -> str:
        code, out, err = guest.vm_exec(service, L1, list(argv), timeout=timeout)
        if code != 0:
            detail = (err or out).decode(errors="replace").strip().splitlines()
            raise GuestError(f"in l1: {' '.join(argv[:4])}: {detail[-1] if detail else f'exit {code}'}")
        return out.decode(errors="replace")

    def teardown(self) -> None:
        """Remove what a (kept) quickstart left: l1 (l2 dies with it), then the namespace."""
        service = Nestor(self.home, netns=self.netns)
        try:
            service.vm_remove(L1, force=True)
        except NotFound:
            pass
        try:
            service.network.switch_remove(SWITCH, force=True)
        except NotFound:
            pass
        if (NETNS_DIR / self.netns).exists():
            run(["ip", "netns", "delete", self.netns])
