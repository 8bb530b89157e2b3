"""`lab save` / `lab restore`: the whole tree, under the seed's rules (R12-R14).

Save is bottom-up: every running VM of the lab is looked at first (its state, whether a
hypervisor runs inside it, the VMs its nestor runs), the pure rule nestor.policy.lab.save_order
refuses before anything is saved, then the deepest VMs are saved first, each through its parent
level's handle (`vm_save` there), so that no hypervisor runs inside a VM when it is saved.
Restore is top-down: a saved VM is started (it resumes), a VM that holds a level waits for its
nestor to answer, then its own saved VMs are started, siblings in parallel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import NestorError, PolicyError, StateError
from ..hypervisor import Hypervisor
from ..policy.lab import SAVABLE, SaveView, refusal, save_order
from .levels import Levels
from .spec import Lab, Level

Progress = Callable[[str], None]
READY_TIMEOUT = 300.0  # a resumed nested host's nestor answering again, under TCG
CLEAR_TIMEOUT = 90.0  # a VM's KVM letting go of its hardware once the last VM inside it is saved
CLEAR_POLL = 2.0


@dataclass(frozen=True)
class Saved:
    path: str
    size: int


def look(lab: Lab, levels: Levels) -> dict[str, SaveView]:
    """Every lab VM that exists, top down; a level is asked only if its VM runs."""
    views: dict[str, SaveView] = {}

    def visit(level: Level) -> None:
        with levels.open(level.path) as hv:
            present = {vm.name for vm in hv.vm_list()}
            blocks = hv.host_policy().nesting == "block"
            shown = {name: hv.vm_show(name) for name in level.vms if name in present}
        for name, info in shown.items():
            path = level.vm_path(name)
            state = str(info.state)
            vm = level.vms[name]
            inside: tuple[str, ...] | None = None
            if state in SAVABLE and (info.nested or vm.inner is not None):
                try:
                    with levels.open(path) as below:
                        inside = tuple(sorted(v.name for v in below.vm_list() if str(v.state) in SAVABLE))
                except NestorError:
                    inside = None
            views[path] = SaveView(path, state, info.nested, info.hypervisor_running, info.hypervisor_detection,
                                   inside, blocks)
            if inside is not None and vm.inner is not None:
                visit(vm.inner)

    visit(lab.root)
    return views


def save(lab: Lab, levels: Levels, progress: Progress) -> list[Saved]:
    views = look(lab, levels)
    order, problems = save_order(lab, views)
    if problems:
        fixes = "; ".join(dict.fromkeys(p.fix for p in problems))
        raise PolicyError(refusal(problems).replace("preflight refused", "save refused", 1) + "; nothing was saved",
                          hint=fixes, rule="lab-save")
    done: list[Saved] = []
    for path in order:
        parent, _, name = path.rpartition("/")
        with levels.open(parent) as hv:
            if views[path].inside:
                _wait_clear(hv, path, name)
            progress(f"{path}: saving")
            try:
                result = hv.vm_save(name)
            except NestorError as exc:
                saved = ", ".join(s.path for s in done) or "nothing"
                raise StateError(f"lab '{lab.name}': saving {path} failed ({exc.message}); saved so far: {saved}",
                                 hint=f"nestor lab restore {lab.name} resumes what was saved") from exc
        progress(f"{path}: saved ({result.size >> 20}M)")
        done.append(Saved(path, result.size))
    return done


def _wait_clear(hv: Hypervisor, path: str, name: str) -> None:
    """The VMs inside `path` are saved: wait until its KVM has let go (the rule's own check in vm_save)."""
    deadline = time.monotonic() + CLEAR_TIMEOUT
    while hv.vm_show(name).hypervisor_running and time.monotonic() < deadline:
        time.sleep(CLEAR_POLL)


@dataclass
class Restored:
    paths: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def restore(lab: Lab, levels: Levels, progress: Progress) -> Restored:
    out = Restored()
    _restore_level(lab.root, levels, progress, out)
    return out


def _restore_level(level: Level, levels: Levels, progress: Progress, out: Restored) -> None:
    with levels.open(level.path) as hv:
        states = {vm.name: str(vm.state) for vm in hv.vm_list()}
    names = [name for name in level.vms if name in states]
    if len(names) <= 1:
        for name in names:
            _restore_vm(level, name, states[name], levels, progress, out)
        return
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="lab-restore") as pool:
        for future in [pool.submit(_restore_vm, level, n, states[n], levels, progress, out) for n in names]:
            future.result()


def _restore_vm(level: Level, name: str, state: str, levels: Levels, progress: Progress, out: Restored) -> None:
    path = level.vm_path(name)
    vm = level.vms[name]
    try:
        if state == "saved":
            progress(f"{path}: restoring")
            with levels.open(level.path) as hv:
                hv.vm_start(name)
            progress(f"{path}: restored")
            with out.lock:
                out.paths.append(path)
            state = "running"
        if state == "running" and vm.inner is not None and vm.inner.vms:
            progress(f"{path}: waiting for its nestor")
            levels.wait_ready(path, READY_TIMEOUT)
            _restore_level(vm.inner, levels, progress, out)
    except NestorError as exc:
        progress(f"{path}: failed: {exc.message}")
        with out.lock:
            out.failed.append(f"{path}: {exc.message}")
