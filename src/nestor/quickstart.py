"""The main job: L0 → l1 → … → lN (`--depth N`, default 2), each level driven by nestor, timed.

L0's service starts l1 (a nested host, nesting on) on an internal switch in a namespace named
after the home. Every level below is made by the same step (`inside`), run through that level's
Hypervisor handle (nestor.hypervisor.at: l1's API over its channel, l2's through l1's, …): a NAT
switch with DHCP towards its parent, its child (a nested host, or at the bottom an appliance
whose script pings L0 through every NAT), the child's boot line, and a nested child's API.
`nestor quickstart --inside --depth N` runs that same chain from inside a level, on its own
service. The levels' sizes come from policy/depth.py.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import GuestError, HostError, NestorError, NotFound
from .images.contract import APPLIANCE_BOOT_LINE, GUEST_HOME, NESTED_HOST_BOOT_LINE, cmdline_params
from .net.host import NETNS_DIR
from .net.run import run
from .policy import depth as depth_rules
from .service import NatSpec, Service, SwitchSpec, SwitchType, VMSpec
from .service.channel import wait_ready
from .service.types import to_json

if TYPE_CHECKING:
    from .hypervisor import Hypervisor

L1 = "l1"
SWITCH = "qs0"
L0_ADDRESS, L1_ADDRESS = "10.77.0.1", "10.77.0.2"
L1_APPEND = " ".join(cmdline_params(ip=f"{L1_ADDRESS}/24", gw=L0_ADDRESS))
NAT_SWITCH = "nat0"
SCRIPT_NAME = "leaf-ping.sh"  # in the leaf's parent's files directory: an API caller may name only files there
GUEST_SCRIPT = f"{GUEST_HOME}/uploads/{SCRIPT_NAME}"
# Runs in the deepest level once it is up (after its DHCP lease): the proof that it reaches l0
# through every level's NAT. One echo reply is the proof, so up to three tries of one ping each.
LEAF_PING = f"""#!/bin/sh
for _ in 1 2 3; do
    if ping -c 1 -W 3 {L0_ADDRESS} >/dev/null; then echo "leaf-ping: ok"; exit 0; fi
done
echo "leaf-ping: failed"
"""
PING_MARK = "leaf-ping: "
# Writes the script in a nested host (busybox sh: the fastest process there), from constants only.
WRITE_SCRIPT = ["/bin/busybox", "sh", "-c", 'mkdir -p -m 0700 "${1%/*}" && printf %s "$2" > "$1"', "sh"]
L1_BOOT_TIMEOUT = 300.0
BOOT_TIMEOUT_PER_LEVEL = 300.0  # level k's boot may take k times this (each level emulates the next)
TREE_TIMEOUT = 120.0
Progress = Callable[[str], None]
# Kept for older callers (bench/quickstart_steps.py): the depth-2 names.
L2 = "l2"
L2_BOOT_LINE = APPLIANCE_BOOT_LINE


def boot_timeout(level: int) -> float:
    return BOOT_TIMEOUT_PER_LEVEL * level


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
    def __init__(self, home: Path, progress: Progress, depth: int = depth_rules.DEFAULT_DEPTH) -> None:
        self.home = home
        self.netns = netns_for(home)
        self.progress = progress
        self.depth = depth
        self.chain = depth_rules.levels(depth)  # a bad depth is refused before anything is done
        self.result = Result()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.progress(f"{name} …")
        start = time.monotonic()
        yield
        elapsed = time.monotonic() - start
        self.result.steps.append((name, elapsed))
        self.progress(f"{name}: {elapsed:.1f} s")

    def check_memory(self) -> None:
        from .host import facts

        depth_rules.check_memory(self.depth, self.chain, facts.mem_available())

    def run(self, keep: bool = False) -> Result:
        self.check_memory()  # refused before anything is made or removed
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
        l1 = self.chain[0]
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
            service.vm_new(VMSpec(L1, vcpus=l1.vcpus, memory=l1.memory, nested=True, image="nested-host",
                                  append=L1_APPEND, switches=(SWITCH,)))
            service.vm_start(L1)
        with self.step("l1 boot"):
            deadline = time.monotonic() + L1_BOOT_TIMEOUT
            for _ in service.vm_log(L1, until=NESTED_HOST_BOOT_LINE, timeout=L1_BOOT_TIMEOUT):
                pass
            wait_ready(service.core, L1, max(1.0, deadline - time.monotonic()))
        self.result.facts["hypervisor running in l1 before l2"] = service.vm_show(L1).hypervisor_running

        def write_script(level_path: str, text: str) -> None:
            service.vm_exec(level_path, [*WRITE_SCRIPT, GUEST_SCRIPT, text], timeout=boot_timeout(self.depth))

        below(service, self.chain, write_script, self.step, self.result.facts)
        with self.step("tree"):
            self.result.tree = to_json(service.tree(timeout=TREE_TIMEOUT))

    def teardown(self) -> None:
        """Remove what a (kept) quickstart left: l1 (every level below dies with it), then the namespace."""
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


Step = Callable[[str], Any]  # Quickstart.step: a context manager per timed step


def below(root: Hypervisor, chain: list[depth_rules.Level], write_script: Callable[[str, str], None],
          step: Step, facts: dict[str, Any]) -> None:
    """Every level of `chain` after its first (which runs, and answers on `root`'s side as
    `chain[0].path` relative to `root`'s level, or is `root` itself when `root` is that level):
    each made by `inside`, run on its parent's Hypervisor."""
    from .hypervisor import at

    top = chain[0].level - 1  # root's own level

    def relative(level: depth_rules.Level) -> str:
        return "/".join(level.path.split("/")[top:])

    for parent, child in itertools.pairwise(chain):
        where = relative(parent)
        if not child.nested_host:
            # before the level's handle is open: the write goes through the same channels, which
            # one command holds at a time ("another command is using its nestor API channel")
            with step(f"{child.name} ping script ({parent.name})"):
                write_script(where, LEAF_PING)

        with at(root, where) as hv:
            inside(hv, parent, child, lambda _text: None, step, facts)
    # Every nested host now runs its child: each one's hypervisor as its own host sees it
    for level, child in itertools.pairwise(chain):
        above = relative(level).rpartition("/")[0]
        if above:
            with at(root, above) as hv:
                running = hv.vm_show(level.name).hypervisor_running
        else:
            running = root.vm_show(level.name).hypervisor_running
        facts[f"hypervisor running in {level.name} with {child.name}"] = running


def inside(hv: Hypervisor, parent: depth_rules.Level, child: depth_rules.Level,
           write_script: Callable[[str], None], step: Step, facts: dict[str, Any], script: str = GUEST_SCRIPT) -> None:
    """The step each level runs for the level below, on that level's Hypervisor `hv`: a NAT
    with DHCP, the child, its boot, and a nested child's API; the deepest child pings L0."""
    where = f"{parent.name}'s API"
    gateway, prefix = depth_rules.nat_subnet(parent.level)
    with step(f"{parent.name} NAT network ({where})"):
        hv.switch_new(SwitchSpec(NAT_SWITCH, SwitchType.INTERNAL))
        hv.switch_set_ip(NAT_SWITCH, gateway)
        hv.nat_new(NatSpec(NAT_SWITCH, NAT_SWITCH, prefix, dhcp=True))
    if child.nested_host:
        spec = VMSpec(child.name, vcpus=child.vcpus, memory=child.memory, nested=True, image="nested-host",
                      append="nestor.dhcp=1", switches=(NAT_SWITCH,))
    else:
        write_script(LEAF_PING)  # below() writes it before it opens the level's handle
        spec = VMSpec(child.name, vcpus=child.vcpus, memory=child.memory, switches=(NAT_SWITCH,),
                      append="nestor.dhcp=1", run_script=script)
    timeout = boot_timeout(child.level)
    with step(f"{child.name} start ({where})"):
        hv.vm_new(spec)
        hv.vm_start(child.name)
    with step(f"{child.name} boot"):
        line = NESTED_HOST_BOOT_LINE if child.nested_host else APPLIANCE_BOOT_LINE
        log = b"".join(hv.vm_log(child.name, until=line, timeout=timeout))
        if line.encode() not in log:
            raise GuestError(f"vm '{child.path}' did not boot within {timeout:.0f} s",
                             hint=f"nestor vm log {child.path}")
        if child.nested_host:
            wait_api(hv, child.name, timeout)
    if child.nested_host:
        return
    with step(f"{child.name} pings l0 through every NAT"):
        log_text = b"".join(hv.vm_log(child.name, until=PING_MARK, timeout=120)).decode(errors="replace")
        ends = time.monotonic() + 10
        # the marker may come in before its word (the console is read as it arrives): its line's end
        while "\n" not in log_text.rpartition(PING_MARK)[2] and time.monotonic() < ends:
            time.sleep(0.2)
            log_text = b"".join(hv.vm_log(child.name, tail=4096)).decode(errors="replace")
        words = log_text.rpartition(PING_MARK)[2].split() if PING_MARK in log_text else []
        result = words[0] if words else "missing"
        facts[f"{child.name} reached l0 through NAT"] = result == "ok"
        if result != "ok":
            raise GuestError(f"{child.path} could not ping {L0_ADDRESS} through the levels' NATs",
                             hint=f"nestor vm log {child.path}")


def wait_api(hv: Hypervisor, name: str, timeout: float) -> None:
    """Wait until the nestor inside VM `name` of `hv`'s level answers (it starts after boot)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with hv.guest(name) as inner:
                inner.vm_list()
            return
        except NestorError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def run_inside(service: Service, level: int, depth: int, step: Step, facts: dict[str, Any]) -> None:
    """`nestor quickstart --inside --depth N` on a level-`level` host: the chain below it."""
    chain = depth_rules.levels(depth, first=level + 1)
    here = depth_rules.Level(f"l{level}", level, 0, 0, True)
    uploads = service.core.home.root / "uploads"

    def write_script(where: str, text: str) -> None:
        if where:  # a level below: through its guest agent
            service.vm_exec(where, [*WRITE_SCRIPT, GUEST_SCRIPT, text], timeout=boot_timeout(depth))
            return
        from .files import private_dir, write_private

        private_dir(uploads)
        write_private(uploads / SCRIPT_NAME, text)

    inside(service, here, chain[0], lambda text: write_script("", text), step, facts, str(uploads / SCRIPT_NAME))
    if len(chain) > 1:
        below(service, chain, write_script, step, facts)
