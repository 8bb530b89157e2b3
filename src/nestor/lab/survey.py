"""Every level's report, top down: a level is asked only if its VM is running (else None)."""

from __future__ import annotations

from ..errors import NestorError
from .levels import Levels
from .observe import Seen, observe
from .spec import Lab


def survey(lab: Lab, levels: Levels) -> dict[str, Seen | None]:
    seen: dict[str, Seen | None] = {}
    for level in lab.levels():
        if level.path:
            parent, _, vm = level.path.rpartition("/")
            above = seen.get(parent)
            running = above is not None and vm in above.vms and above.vms[vm].state == "running"
            if not running:
                seen[level.path] = None
                continue
        try:
            with levels.open(level.path) as hv:
                seen[level.path] = observe(hv, set(level.vms))
        except NestorError as exc:
            if not level.path:
                raise
            seen[level.path] = Seen(error=exc.message)
    return seen
