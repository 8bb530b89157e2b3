"""Every level's report: a level is asked only if its VM is running (else None).

Each level is one request (observe.py) and the levels below a level are asked at the same time,
each in a thread of its own: every VM's nestor answers on its own API channel, so two L1s under
TCG take the time of one. A level below is asked once its parent has answered (is its VM running?).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..errors import NestorError
from .levels import Levels
from .observe import Seen, observe
from .spec import Lab, Level


def survey(lab: Lab, levels: Levels) -> dict[str, Seen | None]:
    seen: dict[str, Seen | None] = {}
    _visit(lab.root, levels, seen)
    return {level.path: seen.get(level.path) for level in lab.levels()}  # top down, as the file has them


def _visit(level: Level, levels: Levels, seen: dict[str, Seen | None]) -> None:
    report = seen[level.path] = _ask(level, levels)
    below = [vm.inner for name, vm in level.vms.items() if vm.inner is not None and _running(report, name)]
    if len(below) == 1:
        _visit(below[0], levels, seen)
    elif below:
        with ThreadPoolExecutor(max_workers=len(below), thread_name_prefix="lab-survey") as pool:
            for future in [pool.submit(_visit, inner, levels, seen) for inner in below]:
                future.result()


def _ask(level: Level, levels: Levels) -> Seen:
    try:
        with levels.open(level.path) as hv:
            return observe(hv, set(level.vms))
    except NestorError as exc:
        if not level.path:
            raise
        return Seen(error=exc.message)


def _running(report: Seen, vm: str) -> bool:
    return report.error is None and vm in report.vms and report.vms[vm].state == "running"
