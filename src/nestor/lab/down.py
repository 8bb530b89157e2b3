"""`lab down`: everything the lab made, at every level, and nothing else.

Deepest levels first; a level inside a VM the lab made goes with that VM (removed with --force),
so only what the lab made inside VMs it did not make is removed one by one."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import NotFound
from .levels import Levels
from .owners import Owners

ORDER = {"vm": 0, "nat": 1, "switch": 2}


def down(name: str, levels: Levels, owners: Owners, progress: Callable[[str], None]) -> list[tuple[str, str, str]]:
    owners.get(name)
    objects = owners.objects(name)
    vm_paths = {f"{lvl}/{n}" if lvl else n for lvl, kind, n in objects if kind == "vm"}

    def inside_own_vm(level: str) -> bool:
        return any(level == p or level.startswith(p + "/") for p in vm_paths)

    removed: list[tuple[str, str, str]] = []
    todo = sorted((o for o in objects if not inside_own_vm(o[0])),
                  key=lambda o: (-o[0].count("/") - (1 if o[0] else 0), ORDER[o[1]], o[2]))
    for level, kind, obj in todo:
        progress(f"{level or 'L0'}: removing {kind} {obj}")
        try:
            with levels.open(level) as hv:
                if kind == "vm":
                    hv.vm_remove(obj, force=True)
                elif kind == "nat":
                    hv.nat_remove(obj)
                else:
                    hv.switch_remove(obj, force=True)
        except NotFound:  # already gone (a re-run of a down that failed half way)
            pass
        removed.append((level, kind, obj))
        owners.release(level, kind, obj)
    owners.forget(name)
    return removed
