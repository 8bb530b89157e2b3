"""The lab use cases over one home: plan, up, status, save, restore, down, inventory (the CLI's and, later, the API's)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from ..errors import InvalidInput, PolicyError, StateError
from ..host import facts as host_facts
from ..policy.lab import Problem, preflight, refusal
from . import file as lab_file
from . import saving
from .down import down
from .levels import Levels
from .observe import Seen
from .owners import Owners
from .plan import Plan, plan
from .saving import Restored, Saved
from .spec import Lab
from .status import inventory, status
from .survey import survey
from .up import Outcome, Up

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
        lab = lab_file.read(path)  # its errors name the file as given
        return self._up(lab, path.read_text(), str(path.resolve()), progress)

    def up_text(self, text: str, source: str, progress: Progress) -> tuple[Planned, Outcome | None]:
        """`lab up` of a lab file's text; `source` names it in errors and in the lab's record."""
        return self._up(lab_file.parse(text, source), text, source, progress)

    def _up(self, lab: Lab, text: str, source: str, progress: Progress) -> tuple[Planned, Outcome | None]:
        planned = self.plan(lab)
        if planned.problems:
            raise _refused(planned.problems)
        if not planned.plan.changes:
            return planned, None
        self.owners.save(lab.name, source, self.netns, text)
        outcome = Up(lab, self._levels(self.netns), self.owners, progress).run()
        return planned, outcome

    def stored(self, name: str) -> tuple[Lab, Levels]:
        record = self.owners.get(name)
        return lab_file.parse(record.text, f"lab '{name}'"), self._levels(record.netns)

    def status(self, name: str) -> dict[str, Any]:
        lab, levels = self.stored(name)
        return status(lab, survey(lab, levels))

    def inventory(self, name: str) -> dict[str, Any]:
        lab, levels = self.stored(name)
        return inventory(lab, survey(lab, levels))

    def records(self) -> list[dict[str, Any]]:
        return [{"name": r.name, "file": r.source, "netns": r.netns, "objects": r.objects} for r in self.owners.all()]

    def save(self, name: str, progress: Progress) -> list[Saved]:
        lab, levels = self.stored(name)
        return saving.save(lab, levels, progress)

    def restore(self, name: str, progress: Progress) -> Restored:
        lab, levels = self.stored(name)
        return saving.restore(lab, levels, progress)

    def down(self, name: str, progress: Progress) -> list[tuple[str, str, str]]:
        record = self.owners.get(name)
        return down(name, self._levels(record.netns), self.owners, progress)


def _refused(problems: list[Problem]) -> PolicyError:
    fixes = "; ".join(dict.fromkeys(p.fix for p in problems))
    return PolicyError(refusal(problems) + "; nothing was created", hint=fixes, rule="preflight")


def failed(outcome: Outcome, name: str, path: Path) -> StateError:
    return StateError(f"lab '{name}': {len(outcome.failed)} failed: " + "; ".join(outcome.failed)
                      + " (what was made is kept and recorded)",
                      hint=f"nestor lab up {path} again converges; nestor lab down {name} removes it")
