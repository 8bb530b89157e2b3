"""The lab use cases over one home: plan, up, status, save, restore, down, inventory (the CLI's and, later, the API's).

What only `up`, `save`, `restore`, `down` and `status` run is imported when they run: `lab plan`
(and `lab up` with nothing to do) pays for the plan's modules only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import paths
from ..errors import InvalidInput, PolicyError, StateError
from ..host import facts as host_facts
from ..model import shown
from ..policy.lab import Problem, preflight, refusal
from ..service.types import from_json
from . import file as lab_file
from .levels import Levels
from .observe import Seen
from .owners import Owners
from .plan import Plan, plan
from .spec import Lab
from .survey import survey
from .types import (
    LabDown,
    LabHost,
    LabInfo,
    LabInventory,
    LabObject,
    LabPlan,
    LabRestored,
    LabSaved,
    LabSavedVM,
    LabStatus,
    LabUp,
)

if TYPE_CHECKING:
    from .saving import Restored, Saved
    from .up import Outcome

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Planned:
    lab: Lab
    plan: Plan
    problems: list[Problem]
    seen: dict[str, Seen | None]

    def to_json(self) -> dict[str, Any]:
        return {**self.plan.to_json(), "problems": [p.to_json() for p in self.problems]}


class Labs:
    def __init__(self, home: Path, netns: str | None) -> None:
        self.home = home
        self.netns = netns
        self.owners = Owners(home / paths.DB_NAME)

    def _levels(self, netns: str | None) -> Levels:
        return Levels(self.home, netns)

    def plan(self, lab: Lab) -> Planned:
        levels = self._levels(self.netns)
        self._same_netns(lab.name)
        seen = survey(lab, levels)
        owned = self.owners.objects(lab.name)
        result = plan(lab, seen, owned)
        facts = levels.service().core.facts
        problems = preflight(lab, result, facts, host_facts.mem_available(), seen)
        return Planned(lab, result, problems, seen)

    def _same_netns(self, name: str) -> None:
        for record in self.owners.all():
            if record.name == name and record.netns != self.netns:
                raise InvalidInput(f"lab '{name}' lives in network namespace {record.netns or '(root)'}, "
                                   f"not {self.netns or '(root)'}",
                                   hint=f"pass --netns {record.netns}" if record.netns else "drop --netns")

    def up(self, path: Path, progress: Progress) -> tuple[Planned, Outcome | None]:
        text = lab_file.read_text(path)
        return self._up(lab_file.parse(text, str(path)), text, str(path.resolve()), progress)  # errors name the file as given

    def up_text(self, text: str, source: str | None, progress: Progress,
                where: str | None = None) -> tuple[Planned, Outcome | None]:
        """`lab up` of a lab file's text; `source` is recorded (`lab list` shows it) and, without
        `where`, names it in errors."""
        return self._up(lab_file.parse(text, where or source or "lab file"), text, source, progress)

    def _up(self, lab: Lab, text: str, source: str | None, progress: Progress) -> tuple[Planned, Outcome | None]:
        planned = self.plan(lab)
        if planned.problems:
            raise _refused(planned.problems)
        if not planned.plan.changes:
            return planned, None
        from .up import Up

        self.owners.save(lab.name, source, self.netns, text)
        outcome = Up(lab, self._levels(self.netns), self.owners, progress).run()
        return planned, outcome

    def stored(self, name: str) -> tuple[Lab, Levels]:
        record = self.owners.get(name)
        return lab_file.parse(record.text, f"lab '{name}'"), self._levels(record.netns)

    def status(self, name: str) -> dict[str, Any]:
        from .status import status

        lab, levels = self.stored(name)
        return status(lab, survey(lab, levels))

    def inventory(self, name: str) -> dict[str, Any]:
        from .status import inventory

        lab, levels = self.stored(name)
        return inventory(lab, survey(lab, levels))

    def records(self) -> list[dict[str, Any]]:
        return [{"name": r.name, "file": r.source, "netns": r.netns, "objects": r.objects} for r in self.owners.all()]

    def save(self, name: str, progress: Progress) -> list[Saved]:
        from . import saving

        lab, levels = self.stored(name)
        return saving.save(lab, levels, progress)

    def restore(self, name: str, progress: Progress) -> Restored:
        from . import saving

        lab, levels = self.stored(name)
        return saving.restore(lab, levels, progress)

    def down(self, name: str, progress: Progress) -> list[tuple[str, str, str]]:
        from .down import down

        record = self.owners.get(name)
        return down(name, self._levels(record.netns), self.owners, progress)


# -- the typed results (nestor.lab.types), as the Service and the Client answer them -----------
def plan_text(labs: Labs, text: str, source: str | None) -> LabPlan:
    planned = labs.plan(lab_file.parse(text, label(source)))
    return from_json(LabPlan, planned.to_json())


def up_text(labs: Labs, text: str, source: str | None, progress: Progress) -> LabUp:
    planned, outcome = labs.up_text(text, source, progress, where=label(source))
    done = [] if outcome is None else [a.to_json() for a in outcome.done]
    return from_json(LabUp, {"lab": planned.lab.name, "changes": len(done), "done": done,
                             "failed": [] if outcome is None else outcome.failed, "up_to_date": outcome is None})


def label(source: str | None) -> str:
    """How errors name a lab file given as text: where the caller read it, or 'lab file'."""
    if not source:
        return "lab file"
    return source if source.isprintable() and len(source) <= 200 else shown(source, 200)


def listed(labs: Labs) -> list[LabInfo]:
    return [from_json(LabInfo, r) for r in labs.records()]


def status_of(labs: Labs, name: str) -> LabStatus:
    return from_json(LabStatus, labs.status(name))


def inventory_of(labs: Labs, name: str) -> LabInventory:
    data = labs.inventory(name)
    hosts = [LabHost(p, v["nestor_addresses"], v["nestor_image"]) for p, v in data["_meta"]["hostvars"].items()]
    return LabInventory(name, hosts, data)


def down_of(labs: Labs, name: str, progress: Progress) -> LabDown:
    return LabDown(name, [LabObject(lvl, kind, obj) for lvl, kind, obj in labs.down(name, progress)])


def save_of(labs: Labs, name: str, progress: Progress) -> LabSaved:
    return LabSaved(name, [LabSavedVM(s.path, s.size) for s in labs.save(name, progress)])


def restore_of(labs: Labs, name: str, progress: Progress) -> LabRestored:
    done = labs.restore(name, progress)
    return LabRestored(name, list(done.paths), list(done.failed))


def refused(plan: LabPlan) -> PolicyError:
    """The refusal of a plan with problems (what `lab up` of it raises)."""
    return _refused([Problem(p.subject, p.rule, p.message, p.fix) for p in plan.problems])


def _refused(problems: list[Problem]) -> PolicyError:
    fixes = "; ".join(dict.fromkeys(p.fix for p in problems))
    return PolicyError(refusal(problems) + "; nothing was created", hint=fixes, rule="preflight")


def failed(outcome: Outcome | LabUp, name: str, path: Path | str) -> StateError:
    return StateError(f"lab '{name}': {len(outcome.failed)} failed: " + "; ".join(outcome.failed)
                      + " (what was made is kept and recorded)",
                      hint=f"nestor lab up {path} again converges; nestor lab down {name} removes it")
