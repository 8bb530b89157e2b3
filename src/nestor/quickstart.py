"""The main job: L0 → L1 (nested-host, nesting on) → L2 (appliance), timed.

nestor drives every level: L0's service starts l1; l1's own nestor, reached through its API
over the VM's channel (service/channel.py), starts l2. Everything network-related lives in a
namespace named after the home.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import GuestError, HostError, NestorError, NotFound
from .images.contract import APPLIANCE_BOOT_LINE as L2_BOOT_LINE
from .images.contract import cmdline_params
from .net.host import NETNS_DIR
from .net.run import run
from .service import NatSpec, Service, SwitchSpec, SwitchType, VMSpec, guests
from .service.channel import client as l1_api
from .service.channel import wait_ready
from .service.types import to_json

L1, L2 = "l1", "l2"
L1_MEMORY, L1_VCPUS = 1 << 30, 2
L2_MEMORY = 256 << 20
SWITCH = "qs0"
L0_ADDRESS, L1_ADDRESS = "10.77.0.1", "10.77.0.2"
L1_APPEND = " ".join(cmdline_params(ip=f"{L1_ADDRESS}/24", gw=L0_ADDRESS))
NAT_SWITCH, NAT_GATEWAY, NAT_PREFIX = "nat0", "192.168.100.1/24", "192.168.100.0/24"
L2_SCRIPT = "/var/lib/nestor/uploads/l2-ping.sh"  # l1's files directory: an API caller may name only files there
# Runs in l2 once it is up (after its DHCP lease): the proof that l2 reaches l0 through l1's NAT.
# One echo reply is the proof (as `ping -c 3` succeeded on any reply), so up to three tries of one
# ping each: the first reply ends it, not three pings a second apart.
L2_PING = f"""#!/bin/sh
for _ in 1 2 3; do
    if ping -c 1 -W 3 {L0_ADDRESS} >/dev/null; then echo "l2-ping: ok"; exit 0; fi
done
echo "l2-ping: failed"
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
            service = Service(self.home)
            failed = [c for c in service.host_check().checks if not c.ok and c.name in ("qemu", "nested virtualization")]
            if failed:
                raise HostError(f"host check failed: {failed[0].name}: {failed[0].detail}", hint=failed[0].fix)
        with self.step("images"):
            service.image_build("nested-host", self.progress)
        with self.step("clean leftovers"):
            self.teardown()
        with self.step("namespace"):
            run(["ip", "netns", "add", self.netns])
            service = Service(self.home, netns=self.netns)
        with self.step("l0 switch"):
            service.switch_new(SwitchSpec(SWITCH, SwitchType.INTERNAL))
            service.switch_set_ip(SWITCH, f"{L0_ADDRESS}/24")
        with self.step("l1 start"):
            # MAC spoofing off on the adapter: the guard is on
            service.vm_new(VMSpec(L1, vcpus=L1_VCPUS, memory=L1_MEMORY, nested=True, image="nested-host",
                                  append=L1_APPEND, switches=(SWITCH,)))
            service.vm_start(L1)
        with self.step("l1 boot"):
            self._wait_l1(service)
        self.result.facts["hypervisor running in l1 before l2"] = service.vm_show(L1).hypervisor_running
        with l1_api(service.core, L1, timeout=L2_BOOT_TIMEOUT + 30) as l1:
            # l2's QEMU starts in l1 (a process on l1's other vCPU) while l1's nestor builds the
            # NAT: l2 needs only the switch to start, and the NAT's DHCP only when its kernel is up.
            with self.step("l2 start begun (l1's API)"):
                l1.switch_new(SwitchSpec(NAT_SWITCH, SwitchType.INTERNAL))
                with guests.agent(service.core, L1, timeout=30) as agent:
                    agent.exec(["mkdir", "-p", "-m", "0700", L2_SCRIPT.rpartition("/")[0]], timeout=30)
                    agent.write_file(L2_SCRIPT, L2_PING.encode())
                l1.vm_new(VMSpec(L2, memory=L2_MEMORY, switches=(NAT_SWITCH,), append="nestor.dhcp=1",
                                 run_script=L2_SCRIPT))
                starting = l1.vm_start_submit(L2)
            with self.step("l1 NAT network, while l2 starts (l1's API)"):
                l1.switch_set_ip(NAT_SWITCH, NAT_GATEWAY)
                l1.nat_new(NatSpec(NAT_SWITCH, NAT_SWITCH, NAT_PREFIX, dhcp=True))
            with self.step("l2 started (l1's API)"):
                l1.vm_started(starting, timeout=L2_BOOT_TIMEOUT)
            with self.step("l2 boot"):
                b"".join(l1.vm_log(L2, until=L2_BOOT_LINE, timeout=L2_BOOT_TIMEOUT))
            self.result.facts["hypervisor running in l1 with l2"] = service.vm_show(L1).hypervisor_running
            with self.step("l2 pings l0 through l1's NAT"):
                log = b"".join(l1.vm_log(L2, until="l2-ping: ", timeout=60)).decode(errors="replace")
                ends = time.monotonic() + 10
                # the marker may come in before its word (the console is read as it arrives): its line's end
                while "\n" not in log.rpartition("l2-ping: ")[2] and time.monotonic() < ends:
                    time.sleep(0.2)
                    log = b"".join(l1.vm_log(L2, tail=4096)).decode(errors="replace")
                words = log.rpartition("l2-ping: ")[2].split() if "l2-ping: " in log else []
                result = words[0] if words else "missing"
                self.result.facts["l2 reached l0 through NAT"] = result == "ok"
                if result != "ok":
                    raise GuestError(f"l2 could not ping {L0_ADDRESS} through l1's NAT",
                                     hint="nestor vm exec l1 -- nestor vm log l2")
        with self.step("tree"):
            self.result.tree = to_json(service.tree())

    def _wait_l1(self, service: Service) -> None:
        """l1's boot line on its console, then its nestor API answering over the channel."""
        from .images.contract import NESTED_HOST_BOOT_LINE as BOOT_LINE

        deadline = time.monotonic() + L1_BOOT_TIMEOUT
        for _ in service.vm_log(L1, until=BOOT_LINE, timeout=L1_BOOT_TIMEOUT):
            pass
        wait_ready(service.core, L1, max(1.0, deadline - time.monotonic()))

    def teardown(self) -> None:
        """Remove what a (kept) quickstart left: l1 (l2 dies with it), then the namespace."""
        service = Service(self.home, netns=self.netns)
        try:
            service.vm_remove(L1, force=True)
        except NotFound:
            pass
        try:
            service.switch_remove(SWITCH, force=True)
        except NotFound:
            pass
        if (NETNS_DIR / self.netns).exists():
            run(["ip", "netns", "delete", self.netns])
