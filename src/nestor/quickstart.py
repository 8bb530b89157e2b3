"""The main job: L0 → l1 → … → lN (`--depth N`, default 2), as a lab shipped with nestor, timed.

The quickstart is the lab file nestor/labs/quickstart.yaml (quickstart-depthN.yaml for `--depth N`):
l0's internal switch, l1 on it (a nested host, nesting on), and in every nested host a NAT switch
with DHCP and its child; the deepest VM, an appliance, pings L0 through every NAT. `nestor
quickstart` checks the host, builds the images, brings the lab up in a namespace named after the
home (`lab up`: each level through its Hypervisor handle), waits for the deepest VM's proof, reads
the tree and each nested host's "hypervisor running", and takes the lab down unless `--keep`.
`nestor quickstart --inside --depth N` brings up the part of that lab below the level it runs on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import GuestError, HostError, NestorError, NotFound
from .lab import file as lab_file
from .net.host import NETNS_DIR
from .net.run import run
from .policy import depth as depth_rules
from .service import Service
from .service.types import to_json

LAB_NAME = "quickstart"
L1 = "l1"
SWITCH = "qs0"
L0_ADDRESS, L1_ADDRESS = "10.77.0.1", "10.77.0.2"
PING_MARK = "leaf-ping: "  # the deepest VM's script prints it, then ok or failed
PING_TIMEOUT = 180.0  # from the deepest VM's start to its proof (DHCP, then up to three pings)
TREE_TIMEOUT = 120.0
Progress = Callable[[str], None]


def lab_text(depth: int) -> str:
    """The shipped lab file for `--depth N` (a bad depth is refused first)."""
    depth_rules.levels(depth)
    name = "quickstart.yaml" if depth == depth_rules.DEFAULT_DEPTH else f"quickstart-depth{depth}.yaml"
    return resources.files("nestor").joinpath("labs", name).read_text()


def netns_for(home: Path) -> str:
    """One namespace per home, so quickstarts in different homes do not collide."""
    return "nestor-" + hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:8]


@dataclass
class Result:
    ok: bool = False
    steps: list[tuple[str, float]] = field(default_factory=list)
    marks: list[tuple[str, float]] = field(default_factory=list)  # lab up's progress, seconds after its start
    facts: dict[str, Any] = field(default_factory=dict)
    tree: dict[str, Any] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "steps": [{"step": s, "seconds": round(t, 2)} for s, t in self.steps],
                "marks": [{"mark": m, "seconds": round(t, 2)} for m, t in self.marks],
                "facts": self.facts, "tree": self.tree, "error": self.error}


class Quickstart:
    def __init__(self, home: Path, progress: Progress, depth: int = depth_rules.DEFAULT_DEPTH) -> None:
        self.home = home
        self.netns = netns_for(home)
        self.progress = progress
        self.depth = depth
        self.chain = depth_rules.levels(depth)  # a bad depth is refused before anything is done
        self.text = lab_text(depth)
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
        from .lab.levels import Levels

        with self.step("host check"):
            service = Service(self.home)
            failed_checks = [c for c in service.host_check().checks
                             if not c.ok and c.name in ("qemu", "nested virtualization")]
            if failed_checks:
                first = failed_checks[0]
                raise HostError(f"host check failed: {first.name}: {first.detail}", hint=first.fix)
        with self.step("images"):
            service.image_build("nested-host", self.progress)
        with self.step("clean leftovers"):
            self.teardown()
        with self.step("namespace"):
            run(["ip", "netns", "add", self.netns])
        up_and_prove(self.home, self.netns, self.text, f"nestor/labs ({LAB_NAME}, depth {self.depth})",
                     self.chain[-1].path, self.step, self._marking(time.monotonic()), self.result.facts)
        levels = Levels(self.home, self.netns)
        for host, child in zip(self.chain, self.chain[1:], strict=False):
            with levels.open(host.path.rpartition("/")[0]) as hv:
                running = hv.vm_show(host.name).hypervisor_running
            self.result.facts[f"hypervisor running in {host.name} with {child.name}"] = running
        with self.step("tree"):
            self.result.tree = to_json(levels.service().tree(timeout=TREE_TIMEOUT))

    def _marking(self, start: float) -> Progress:
        def mark(line: str) -> None:
            self.result.marks.append((line, time.monotonic() - start))
            self.progress(line)
        return mark

    def teardown(self) -> None:
        """Remove what a (kept) quickstart left: the lab (every level below l1 dies with it),
        anything of an older quickstart's, then the namespace."""
        from .lab.session import Labs

        labs = Labs(self.home, self.netns)
        try:
            labs.down(LAB_NAME, self.progress)
        except NotFound:
            pass
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


def leaf_proof(hv: Any, name: str, path: str, timeout: float = PING_TIMEOUT) -> str:
    """The deepest VM's word after PING_MARK on its console: ok, failed, or missing."""
    log_text = b"".join(hv.vm_log(name, until=PING_MARK, timeout=timeout)).decode(errors="replace")
    if PING_MARK not in log_text:
        raise GuestError(f"vm '{path}' gave no ping result within {timeout:.0f} s", hint=f"nestor vm log {path}")
    ends = time.monotonic() + 10
    # the marker may come in before its word (the console is read as it arrives): its line's end
    while "\n" not in log_text.rpartition(PING_MARK)[2] and time.monotonic() < ends:
        time.sleep(0.2)
        log_text = b"".join(hv.vm_log(name, tail=4096)).decode(errors="replace")
    words = log_text.rpartition(PING_MARK)[2].split()
    return words[0] if words else "missing"


def inside_text(depth: int, level: int) -> str:
    """The part of the depth-N lab below level `level` (this host), as a lab file of its own:
    l{level}'s switches, NATs and VMs become its top level."""
    import yaml

    depth_rules.levels(depth, first=level + 1)  # refuses a depth at or above this host's level
    data = lab_file.load_yaml(lab_text(depth), "quickstart lab")
    here = data
    for k in range(1, level + 1):
        here = here["vms"][f"l{k}"]
    sub = {"name": LAB_NAME, **{key: here[key] for key in ("switches", "nats", "vms") if key in here}}
    return str(yaml.safe_dump(sub, sort_keys=False))


def up_and_prove(home: Path, netns: str | None, text: str, source: str, leaf_path: str,
                 step: Callable[[str], Any], progress: Progress, facts: dict[str, Any]) -> None:
    """`lab up` of the quickstart lab `text` on this home's level, then the deepest VM's proof
    (`leaf_path`, relative to this level) that it pinged L0 through every NAT."""
    from .lab.levels import Levels
    from .lab.session import Labs, failed

    with step("lab up"):
        outcome = Labs(home, netns).up_text(text, source, progress)[1]
        if outcome is not None and outcome.failed:
            raise failed(outcome, LAB_NAME, Path(source))
    parent, _, leaf = leaf_path.rpartition("/")
    with step(f"{leaf} pings l0 through every NAT"), Levels(home, netns).open(parent) as hv:
        proof = leaf_proof(hv, leaf, leaf_path)
    facts[f"{leaf} reached l0 through NAT"] = proof == "ok"
    if proof != "ok":
        raise GuestError(f"{leaf_path} could not ping {L0_ADDRESS} through the levels' NATs ({proof})",
                         hint=f"nestor quickstart --keep, then nestor vm log {leaf_path}")


def run_inside(home: Path, level: int, depth: int, step: Callable[[str], Any], result: Result,
               progress: Progress) -> None:
    """`nestor quickstart --inside --depth N` on a level-`level` host: the lab below it, and its proof."""
    leaf = depth_rules.levels(depth, first=level + 1)[-1]
    up_and_prove(home, None, inside_text(depth, level), f"quickstart below l{level}",
                 "/".join(leaf.path.split("/")[level:]), step, progress, result.facts)
